"""The reweighting trainer: ``train(cfg: SegReweightConfig) -> RunSummary``.

Per step: an exact batch and a rough batch give ``mean exact loss + mean(gamma_k * rough loss_k)``;
with ``--mixing`` a main and an auxiliary U-Net (different initialisations) are trained side by
side, both also on mixed images with ``sum gamma_i l_i + gamma_j l_j + lambda (gamma_i + gamma_j)/2 r_ij``
(``l_i``/``l_j``: loss on the region taken from image i/j against its label; ``r_ij``: loss
against the other model's pseudo-label of the mixed image). ``--mix-regions split`` (the
default, claim 8): ``l_i`` is the main model's loss and ``l_j`` the auxiliary's; ``both``: each
model takes both. Every ``tau`` steps the weights move by the per-image gradient agreement with
an exact batch (``weights.GammaTable``); ``--oracle-gamma`` fixes them from meta.csv instead.

The run folder gets the engine's files (config, metrics.jsonl with ``train/dot_*``, weights/,
curves.png) and ``gamma_history.csv``, ``gamma.png``, ``gamma_dots.csv`` and ``gamma_dots.png``
(the distribution of d_k = g_S . g_k per update), ``overlays/`` (validation predictions) and ``summary.json``.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from fastmed.engine import distributed
from fastmed.engine.checkpoint import load_model, make_checkpoint
from fastmed.engine.device import autocast, select_device
from fastmed.engine.run_dir import RunDir
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import DataError
from fastmed.nets.unet import UNet
from fastmed.seg.data import SegDataset, SegItem, scan_seg_split, seg_splits
from fastmed.seg.metrics import segmentation_metrics
from fastmed.seg.predict import overlay_mask, predict_masks
from fastmed.seg.losses import seg_loss, soft_dice_loss
from fastmed.seg.reweight.dot_log import dot_quantiles, write_dot_history
from fastmed.seg.reweight.losses import region_bce
from fastmed.seg.reweight.mixing import mix, sample_pairs
from fastmed.seg.reweight.plots import plot_dots, plot_gamma, write_overlays
from fastmed.seg.reweight.weights import GammaTable, gradient_dots, mean_gradient, separation_auc


def split_exact_rough(items: list[SegItem], n_exact: int, exact_list: str | None, seed: int) -> tuple[list[SegItem], list[SegItem]]:
    """Choose the exact images (``exact_list`` ids, else ``n_exact`` sampled, ``-1`` all with masks); rough = the rest with rough masks."""
    with_mask = [it for it in items if it.mask is not None]
    if exact_list:
        wanted = {line.strip() for line in Path(exact_list).read_text(encoding="utf-8").splitlines() if line.strip()}
        exact = [it for it in with_mask if it.id in wanted]
        missing = wanted - {it.id for it in exact}
        if missing:
            raise DataError(f"--exact-list names {len(missing)} id(s) without an image and exact mask, e.g. {sorted(missing)[:3]}")
    elif n_exact < 0:
        exact = with_mask
    else:
        if n_exact > len(with_mask):
            raise DataError(f"--n-exact {n_exact} but only {len(with_mask)} image(s) have an exact mask")
        order = np.random.default_rng(seed).permutation(len(with_mask))[:n_exact]
        exact = [with_mask[i] for i in sorted(order)]
    if not exact:
        raise DataError("no exact masks: the method needs at least one image with masks/ (see --n-exact / --exact-list)")
    chosen = {it.id for it in exact}
    rough = [it for it in items if it.id not in chosen and it.rough is not None]
    return exact, rough


def load_splits(cfg) -> tuple[list[SegItem], list[SegItem], list[SegItem]]:
    """(exact, rough, validation) items; validation needs exact masks."""
    splits = seg_splits(cfg.data)
    scans = {name: scan_seg_split(path) for name, path in splits.items() if name in ("train", "val")}
    for scan in scans.values():
        if scan.skipped:
            print(scan.report())
    train_items = scans["train"].items
    if "val" in scans:
        val = [it for it in scans["val"].items if it.mask is not None]
    else:
        rng = np.random.default_rng(cfg.seed + 1)
        order = rng.permutation(len(train_items))
        n_val = max(1, int(round(cfg.val_fraction * len(train_items))))
        val = [train_items[i] for i in order[:n_val] if train_items[i].mask is not None]
        train_items = [train_items[i] for i in sorted(order[n_val:])]
    if not val:
        raise DataError(f"no validation images with exact masks under {cfg.data}")
    exact, rough = split_exact_rough(train_items, cfg.n_exact, cfg.exact_list, cfg.seed)
    return exact, rough, val


def predict_dataset(model: torch.nn.Module, images: torch.Tensor, device: torch.device, chunk: int = 32) -> torch.Tensor:
    """``(N, H, W)`` uint8 masks of ``images (N, 3, H, W)`` in eval mode, ``chunk`` images at a time."""
    model.eval()
    return torch.cat([predict_masks(model, images[i:i + chunk].to(device)).cpu() for i in range(0, len(images), chunk)])


def _augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random 90-degree rotation and flip for a whole batch of images and masks."""
    k, flip = int(torch.randint(4, (1,), generator=gen)), bool(torch.randint(2, (1,), generator=gen))
    x, y = torch.rot90(x, k, (2, 3)), torch.rot90(y, k, (2, 3))
    return (x.flip(3), y.flip(3)) if flip else (x, y)


class ReweightTask:
    """``TrainTask`` of the method (see the module docstring)."""

    def __init__(self, cfg, exact: list[SegItem], rough: list[SegItem], val: list[SegItem], device: torch.device):
        self.cfg, self.device = cfg, device
        # an epoch is one pass over the training images, whether or not the rough ones are used
        self.n_steps = max(1, math.ceil((len(exact) + len(rough)) / cfg.batch_size))
        rough = rough if cfg.use_rough else []
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.arch_kwargs = {"in_channels": 3, "num_classes": 1, "base_width": cfg.base_width, "depth": cfg.depth}
        self.exact = SegDataset(exact, cfg.image_size, "mask")
        self.rough = SegDataset(rough, cfg.image_size, "rough")
        self.val = SegDataset(val, cfg.image_size, "mask")
        self.gammas = GammaTable(len(rough), cfg.gamma_init)
        if cfg.oracle_gamma and rough:
            wrong = rough_wrong_labels(rough)
            if wrong is None:
                raise DataError("--oracle-gamma needs a meta.csv column rough_wrong for every rough image")
            self.gammas = GammaTable(len(rough), 1.0)
            self.gammas.gamma[torch.from_numpy(wrong)] = 0.0
        torch.manual_seed(cfg.seed)
        self.models = [UNet(**self.arch_kwargs).to(device)]
        if cfg.mixing:
            torch.manual_seed(cfg.seed + 1000)  # the auxiliary model: another initialisation
            self.models.append(UNet(**self.arch_kwargs).to(device))
        self.opts = [torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for m in self.models]
        for m, opt in zip(self.models, self.opts):  # torchrun: averaged gradients; the gamma updates run on every rank alike
            distributed.sync_gradients(opt, m, batch=distributed.per_rank_batch(cfg.batch_size))
        self.step_count = 0

    # --- batches -------------------------------------------------------------
    def train_batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        bs = self.cfg.batch_size
        rough_order = torch.randperm(len(self.rough), generator=self.gen) if len(self.rough) else None
        for s in range(self.n_steps):
            batch = {"exact": torch.randint(len(self.exact), (min(bs, len(self.exact)),), generator=self.gen)}
            if rough_order is not None:
                batch["rough"] = rough_order[(torch.arange(bs) + s * bs) % len(self.rough)]
            yield batch

    def _take(self, ds: SegDataset, index: torch.Tensor, augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = ds.images[index], ds.masks[index]
        if augment:
            x, y = _augment(x, y, self.gen)
        return x.to(self.device), y.to(self.device)

    # --- the method ----------------------------------------------------------
    def _logits(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` float32 logits of ``x (B, 3, H, W)``; bf16 autocast on CUDA with ``--amp``.

        Training forward passes only: the gradient dot products of the weight update stay in float32.
        """
        with autocast(self.device, self.cfg.amp):
            return model(x).float()

    def supervised_loss(self, model: torch.nn.Module, xe, ye, xr, yr, gamma) -> torch.Tensor:
        """Mean exact loss + mean gamma-weighted rough loss."""
        loss = seg_loss(self._logits(model, xe), ye).mean()
        if xr is not None:
            loss = loss + (gamma * seg_loss(self._logits(model, xr), yr)).mean()
        return loss

    def mixed_batch(self) -> dict[str, torch.Tensor]:
        """Pairs (i ~ weight, j uniform) over exact + rough images, mixed by i's mask."""
        x_all = torch.cat([self.exact.images, self.rough.images]) if len(self.rough) else self.exact.images
        y_all = torch.cat([self.exact.masks, self.rough.masks]) if len(self.rough) else self.exact.masks
        w_all = torch.cat([torch.ones(len(self.exact)), self.gammas.gamma])
        i, j = sample_pairs(w_all, self.cfg.batch_size, self.gen)
        region = y_all[i].to(self.device)
        return {"xi": x_all[i].to(self.device), "xj": x_all[j].to(self.device), "region": region,
                "x": mix(region, x_all[i], x_all[j]).to(self.device), "y": mix(region, y_all[i], y_all[j]).to(self.device),
                "gi": w_all[i].to(self.device), "gj": w_all[j].to(self.device)}

    def mixed_loss(self, model, other, m: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """Model ``k``'s (0: main, 1: auxiliary) part of ``mean over pairs of gamma_i l_i + gamma_j l_j + lambda (gamma_i + gamma_j)/2 r_ij``.

        ``split``: ``gamma_i l_i`` for the main model, ``gamma_j l_j`` for the auxiliary (the two parts sum
        to the objective once); ``both``: each model takes both. ``r_ij`` (against ``other``'s pseudo-label
        of the mixed image, i.e. cross pseudo-labels) goes to both models in either case.
        """
        with torch.no_grad():
            pseudo = (mix(m["region"], torch.sigmoid(self._logits(other, m["xi"])), torch.sigmoid(self._logits(other, m["xj"]))) > 0.5).float()
        logits = self._logits(model, m["x"])
        own = torch.zeros_like(m["gi"])
        if self.cfg.mix_regions == "both" or k == 0:
            own = own + m["gi"] * region_bce(logits, m["y"], m["region"])
        if self.cfg.mix_regions == "both" or k == 1:
            own = own + m["gj"] * region_bce(logits, m["y"], 1 - m["region"])
        r_ij = region_bce(logits, pseudo, torch.ones_like(pseudo))
        return (own + self.cfg.lam * (m["gi"] + m["gj"]) / 2 * r_ij).mean()

    def update_gammas(self) -> dict[str, float]:
        """gamma_k <- clip(gamma_k + beta g_S . g_k) on all rough images or a sampled pool; return ``dot_quantiles`` of the d_k."""
        model = self.models[0]
        idx_e = torch.randint(len(self.exact), (min(self.cfg.exact_batch, len(self.exact)),), generator=self.gen)
        loss_fn = soft_dice_loss if self.cfg.gamma_loss == "dice" else seg_loss
        g_s = mean_gradient(model, loss_fn, *self._take(self.exact, idx_e, False))
        n = len(self.rough)
        pool = torch.randperm(n, generator=self.gen)[: self.cfg.pool_size] if 0 < self.cfg.pool_size < n else torch.arange(n)
        dots = gradient_dots(model, loss_fn, *self._take(self.rough, pool, False), g_s)
        self.gammas.step(pool, dots, self.cfg.beta, self.cfg.update_rule, self.step_count)
        return dot_quantiles(self.gammas.dot_history[-1][2])

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = {k: distributed.rank_part(v) for k, v in batch.items()}  # torchrun: this rank's rows of the draw
        xe, ye = self._take(self.exact, batch["exact"], self.cfg.augment)
        xr = yr = gamma = None
        if "rough" in batch:
            xr, yr = self._take(self.rough, batch["rough"], self.cfg.augment)
            gamma = self.gammas.gamma[batch["rough"]].to(self.device)
        m = {k: distributed.rank_part(v) for k, v in self.mixed_batch().items()} if len(self.models) == 2 else None
        out = {}
        for k, (model, opt) in enumerate(zip(self.models, self.opts)):
            model.train()
            loss = self.supervised_loss(model, xe, ye, xr, yr, gamma)
            if m is not None:
                mixed = self.mixed_loss(model, self.models[1 - k], m, k)
                loss = loss + mixed
                out["mixed" if k == 0 else "mixed_aux"] = float(mixed.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out["loss" if k == 0 else "loss_aux"] = float(loss.detach())
        self.step_count += 1
        if self.cfg.update_gamma and not self.cfg.oracle_gamma and len(self.rough) and self.step_count % self.cfg.tau == 0:
            out.update(self.update_gammas())
        if len(self.rough):
            out["gamma_mean"] = float(self.gammas.gamma.mean())
        return out

    # --- evaluation and state ------------------------------------------------
    def predict_val(self) -> torch.Tensor:
        return predict_dataset(self.models[0], self.val.images, self.device)

    def evaluate(self) -> dict[str, float]:
        return segmentation_metrics(self.predict_val(), self.val.masks[:, 0])

    def checkpoint(self) -> dict[str, Any]:
        return make_checkpoint(self.models[0], task="seg", kind="segmenter", arch="unet", arch_kwargs=self.arch_kwargs,
                               class_names=["object"], input_size=[self.cfg.image_size] * 2, meta={"method": "reweight"})

    def state_dict(self) -> dict[str, Any]:
        return {"opts": [o.state_dict() for o in self.opts], "aux": self.models[1].state_dict() if len(self.models) == 2 else None,
                "gammas": self.gammas.state_dict(), "step": self.step_count, "rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.models[0].load_state_dict(state["model"])
        if len(self.models) == 2 and state.get("aux") is not None:
            self.models[1].load_state_dict(state["aux"])
        for o, s in zip(self.opts, state.get("opts", [])):
            o.load_state_dict(s)
        if "gammas" in state:
            self.gammas.load_state_dict(state["gammas"])
        self.step_count = int(state.get("step", 0))
        if "rng" in state:
            self.gen.set_state(state["rng"])


def write_gamma_history(path: Path, gammas: GammaTable, rough: list[SegItem]) -> Path:
    """``step,<id>,...`` rows: one column per rough image, one row per update (first row: the initial weights)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["step"] + [it.id for it in rough])
        for step, g in gammas.history:
            w.writerow([step] + [f"{v:.5f}" for v in g])
    return path


def rough_wrong_labels(rough: list[SegItem]) -> np.ndarray | None:
    """``meta.csv`` column ``rough_wrong`` as a bool array, or None when absent."""
    if not rough or not all("rough_wrong" in it.meta for it in rough):
        return None
    return np.array([str(it.meta["rough_wrong"]).strip() in ("1", "true", "True") for it in rough])


def evaluate_test_split(cfg, run: RunDir) -> dict[str, float] | None:
    """Metrics of ``weights/best.pt`` on the ``test/`` split (exact masks), when the data has one."""
    splits = seg_splits(cfg.data)
    if "test" not in splits:
        return None
    items = [it for it in scan_seg_split(splits["test"]).items if it.mask is not None]
    if not items:
        return None
    model, _ = load_model(run.best, map_location=select_device(cfg.device))
    ds = SegDataset(items, cfg.image_size, "mask")
    pred = predict_dataset(model, ds.images, next(model.parameters()).device)
    return segmentation_metrics(pred, ds.masks[:, 0])


def train(cfg) -> RunSummary:
    """Train, write the run folder, and return its summary (best epoch by validation Dice).

    Extra ``metrics``: ``n_exact``, ``n_rough``, ``n_val``; ``gamma_auc``,
    ``gamma_mean_wrong``, ``gamma_mean_right`` when meta.csv marks wrong rough
    masks; ``test/<metric>`` of best.pt when the data has a test/ split.
    """
    session = start_run(cfg, "seg", "train")
    exact, rough, val = load_splits(cfg)
    task = ReweightTask(cfg, exact, rough, val, session.device)
    rough = task.rough.items
    print(f"seg reweight: {len(exact)} exact, {len(rough)} rough, {len(val)} validation images -> {session.path}")
    summary = session.fit(task, monitor="val/dice", mode="max", title="seg reweight")
    run = session.run
    extra: dict[str, Any] = {"n_exact": len(exact), "n_rough": len(rough), "n_val": len(val)}
    if rough:
        write_gamma_history(run.path / "gamma_history.csv", task.gammas, rough)
        wrong = rough_wrong_labels(rough)
        plot_gamma(task.gammas.history, run.path / "gamma.png", wrong)
        if task.gammas.dot_history:
            write_dot_history(run.path / "gamma_dots.csv", task.gammas.dot_history, wrong)
            plot_dots(task.gammas.dot_history, run.path / "gamma_dots.png", wrong)
        if wrong is not None:
            extra["gamma_auc"] = separation_auc(task.gammas.gamma.numpy(), wrong)
            extra["gamma_mean_wrong"] = float(task.gammas.gamma.numpy()[wrong].mean()) if wrong.any() else None
            extra["gamma_mean_right"] = float(task.gammas.gamma.numpy()[~wrong].mean()) if (~wrong).any() else None
    write_overlays(task.val, task.predict_val(), run.path / "overlays", cfg.overlays, overlay_mask)
    test = evaluate_test_split(cfg, run)
    extra.update({f"test/{k}": v for k, v in (test or {}).items()})
    print(f"val dice {summary.metrics.get('val/dice', float('nan')):.4f} iou {summary.metrics.get('val/iou', float('nan')):.4f}"
          + (f"; gamma AUC (wrong vs right rough masks) {extra['gamma_auc']:.3f}" if "gamma_auc" in extra else ""))
    return session.finish(summary, **extra)
