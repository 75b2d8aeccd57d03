"""The contour trainer: ``train(cfg: SegContourConfig) -> RunSummary`` (``fastmed seg train --method contour``).

A U-Net (``fastmed.nets.unet.UNet`` with ``extra_heads={"corr": 1}``) predicts
the mask logits and the correlation logits of every pixel. Labels come only
from the GeoJSON outlines (``contours/``): the filled polygons give the mask,
``correlation.correlation_maps`` the (fused) correlation target. Loss:
``mask_weight * (BCE + soft Dice) + corr_weight * regression(sigmoid(corr), target)``.
With ``--object-slots K`` a third head predicts K objects, each its own mask
and correlation map, matched to the outlines per image (``objects.py``: why
slots and matching).
Validation (``val/`` split, else ``--val-fraction`` of train): Dice, IoU, HD95
of the mask head against the exact ``masks/<id>.png`` where an image has one
(else the filled outlines), the mean absolute error of the correlation head,
and, where ``meta.csv`` marks touching objects, the separation error
(``separation.py``; instances from the slots, else connected components;
``sep_error_ridge``: the mask cut along the predicted correlation's ridges).

The run folder gets the engine's files (config, metrics.jsonl, weights/,
curves.png), ``correlation_maps.png`` (training labels: image, contour,
distance, correlation), ``predictions.png`` (validation predictions) and
``summary.json``. The checkpoint is a ``kind="segmenter"`` that
``fastmed seg predict`` reads (the mask head is its output; with slots, also a per-object label map).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fastmed.engine import distributed
from fastmed.engine.checkpoint import make_checkpoint
from fastmed.engine.device import autocast
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import DataError
from fastmed.nets.unet import UNet
from fastmed.seg.contour.correlation import CorrelationParams
from fastmed.seg.contour.dataset import ContourSegDataset, contour_labels
from fastmed.seg.contour.figure import Panel, contour_overlay, save_label_figure, save_panels
from fastmed.seg.contour.losses import contour_loss
from fastmed.seg.contour.objects import slot_instances
from fastmed.seg.contour.separation import mask_components, ridge_split, separation_error
from fastmed.seg.data import SegItem, scan_seg_split, seg_splits
from fastmed.seg.metrics import segmentation_metrics


def correlation_params(cfg) -> CorrelationParams:
    """The ``CorrelationParams`` named by the config's contour options."""
    return CorrelationParams(mode=cfg.corr_mode, sigma_dist=cfg.sigma_dist, sigma_int=cfg.sigma_int, fusion=cfg.corr_fusion)


def contour_splits(cfg) -> tuple[list[SegItem], list[SegItem]]:
    """(train, validation) items that have contours; ``--n-train`` of train sampled with ``--seed``."""
    splits = seg_splits(cfg.data)
    scans = {name: scan_seg_split(path) for name, path in splits.items() if name in ("train", "val")}
    for scan in scans.values():
        if scan.skipped:
            print(scan.report())
    train_items = [it for it in scans["train"].items if it.contours is not None]
    if "val" in scans:
        val = [it for it in scans["val"].items if it.contours is not None]
    else:
        order = np.random.default_rng(cfg.seed + 1).permutation(len(train_items))
        n_val = max(1, int(round(cfg.val_fraction * len(train_items))))
        val = [train_items[i] for i in sorted(order[:n_val])]
        train_items = [train_items[i] for i in sorted(order[n_val:])]
    if not train_items or not val:
        raise DataError(f"{cfg.data}: the contour method needs contours/<id>.geojson for training and validation images "
                        f"(found {len(train_items)} train, {len(val)} val)")
    if cfg.n_train >= 0:
        if cfg.n_train > len(train_items):
            raise DataError(f"--n-train {cfg.n_train} but only {len(train_items)} training image(s) have contours")
        order = np.random.default_rng(cfg.seed).permutation(len(train_items))[: cfg.n_train]
        train_items = [train_items[i] for i in sorted(order)]
    return train_items, val


class ContourTask:
    """``TrainTask`` of the contour method (see the module docstring)."""

    def __init__(self, cfg, train_items: list[SegItem], val_items: list[SegItem], device: torch.device):
        self.cfg, self.device = cfg, device
        self.params = correlation_params(cfg)
        self.train_ds = ContourSegDataset(train_items, cfg.image_size, self.params, augment=cfg.augment,
                                          show_progress=cfg.progress, object_slots=cfg.object_slots)
        self.val_ds = ContourSegDataset(val_items, cfg.image_size, self.params, exact_masks=True)
        heads = {"corr": 1, **({"objects": 2 * cfg.object_slots} if cfg.object_slots else {})}
        self.arch_kwargs = {"in_channels": 3, "num_classes": 1, "base_width": cfg.base_width, "depth": cfg.depth,
                            "extra_heads": heads}
        torch.manual_seed(cfg.seed)
        self.model = UNet(**self.arch_kwargs).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        distributed.sync_gradients(self.opt, self.model)  # torchrun: gradients averaged over the ranks
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.loader = distributed.train_loader(self.train_ds, batch_size=cfg.batch_size, shuffle=True,
                                                  generator=self.gen, num_workers=cfg.workers)

    def train_batches(self, epoch: int):
        return self.loader

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        self.model.train()
        x, mask, corr = (batch[k].to(self.device) for k in ("image", "mask", "corr"))
        with autocast(self.device, self.cfg.amp):
            out = self.model(x)
        out = {k: v.float() for k, v in out.items()}
        objects = tuple(batch[k].to(self.device) for k in ("obj_masks", "obj_corrs", "obj_valid")) if self.cfg.object_slots else None
        losses = contour_loss(out, mask, corr, self.cfg.mask_weight, self.cfg.corr_weight, self.cfg.corr_loss, objects)
        self.opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        self.opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    @torch.no_grad()
    def predict_val(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validation ``(mask probabilities, correlation)``, each ``(N, 1, S, S)``, and instance labels
        ``(N, S, S)`` (slots, else connected components of the mask), on the CPU."""
        self.model.eval()
        probs, corrs, instances = [], [], []
        for i in range(0, len(self.val_ds), 32):
            with autocast(self.device, self.cfg.amp):
                out = self.model(self.val_ds.images[i:i + 32].to(self.device))
            probs.append(torch.sigmoid(out["mask"].float()).cpu())
            corrs.append(torch.sigmoid(out["corr"].float()).cpu())
            instances.append(slot_instances(out["objects"]).cpu() if "objects" in out else
                             torch.from_numpy(np.stack([mask_components(p[0] > 0.5) for p in probs[-1].numpy()])))
        return torch.cat(probs), torch.cat(corrs), torch.cat(instances)

    def evaluate(self) -> dict[str, float]:
        probs, corr, instances = self.predict_val()
        metrics = segmentation_metrics(probs[:, 0] > 0.5, self.val_ds.masks[:, 0])
        metrics["corr_mae"] = float((corr - self.val_ds.corrs).abs().mean())
        if self.val_ds.touching:
            index, exact = [i for i, _ in self.val_ds.touching], [inst for _, inst in self.val_ds.touching]
            metrics["sep_error"] = separation_error([instances[i].numpy() for i in index], exact, [(1, 2)] * len(index))
            if self.cfg.corr_weight > 0 and not self.cfg.object_slots:
                cut = [ridge_split(probs[i, 0].numpy() > 0.5, corr[i, 0].numpy()) for i in index]
                metrics["sep_error_ridge"] = separation_error(cut, exact, [(1, 2)] * len(index))
        return metrics

    def checkpoint(self) -> dict[str, Any]:
        return make_checkpoint(self.model, task="seg", kind="segmenter", arch="unet", arch_kwargs=self.arch_kwargs,
                               class_names=["object"], input_size=[self.cfg.image_size] * 2,
                               meta={"method": "contour", "correlation": vars(self.params).copy(),
                                     "object_slots": self.cfg.object_slots})

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict(), "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if "opt" in state:
            self.opt.load_state_dict(state["opt"])
        if "rng" in state:
            self.gen.set_state(state["rng"])


def save_predictions(task: ContourTask, path, n: int) -> Any:
    """``predictions.png``: per validation image, image+contour, true and predicted mask and correlation."""
    probs, corr, instances = task.predict_val()
    rows: list[list[Panel]] = []
    for i in range(min(n, len(task.val_ds))):
        lab = contour_labels(task.val_ds.items[i], task.cfg.image_size, task.params)
        rows.append([("image+contour", contour_overlay(lab.image, lab.contours), None),
                     ("mask", task.val_ds.masks[i, 0].numpy(), "gray", (0, 1)),
                     ("pred. mask", (probs[i, 0] > 0.5).numpy(), "gray", (0, 1)),
                     ("target corr.", task.val_ds.corrs[i, 0].numpy(), "viridis", (0, 1)),
                     ("pred. corr.", corr[i, 0].numpy(), "viridis", (0, 1)),
                     ("pred. objects", instances[i].numpy(), "tab10", (0, 9))])
    return save_panels(path, rows, "seg contour: validation") if rows else None


def train(cfg) -> RunSummary:
    """Train, write the run folder, and return its summary (best epoch by validation Dice; ``metrics``: + n_train, n_val)."""
    session = start_run(cfg, "seg", "train")
    train_items, val_items = contour_splits(cfg)
    task = ContourTask(cfg, train_items, val_items, session.device)
    for name, ds in (("train", task.train_ds), ("val", task.val_ds)):
        for item_id, why in ds.skipped:
            print(f"skipped {name} image {item_id}: {why}")
    print(f"seg contour: {len(task.train_ds)} train, {len(task.val_ds)} validation images -> {session.path}")
    save_label_figure(session.run.path / "correlation_maps.png",
                      [contour_labels(it, cfg.image_size, task.params) for it in task.train_ds.items[:3]],
                      f"contour labels (mode={task.params.mode}, sigma_dist={task.params.sigma_dist}, "
                      f"sigma_int={task.params.sigma_int}, fusion={task.params.fusion})")
    summary = session.fit(task, monitor="val/dice", mode="max", title="seg contour",
                          skipped=len(task.train_ds.skipped) + len(task.val_ds.skipped))
    save_predictions(task, session.run.path / "predictions.png", cfg.overlays)
    best = summary.metrics
    print(f"val dice {best.get('val/dice', float('nan')):.4f} iou {best.get('val/iou', float('nan')):.4f} "
          f"hd95 {best.get('val/hd95', float('nan')):.2f} corr_mae {best.get('val/corr_mae', float('nan')):.4f}")
    return session.finish(summary, n_train=len(task.train_ds), n_val=len(task.val_ds))
