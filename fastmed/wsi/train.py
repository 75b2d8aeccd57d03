"""``fastmed wsi train``: attention-MIL on cached patch features, several slides per step.

One step: a ragged batch of ``batch_size`` slides → ``AttentionMIL`` → the
four losses of ``fastmed.wsi.losses`` with their weights. Validation: slide
AUC / accuracy / F1, and patch-level AUC of attention, patch probability and
their product where patch labels exist. The engine's ``FitLoop`` owns epochs,
checkpoints (``weights/best.pt`` by validation loss), metrics and resume.
Slides come through ``BagDataset`` and a DataLoader (``--workers``): held in
memory, or with ``--stream`` read from their feature files at each step, so
memory is a few batches and not the cohort; both give the same batches.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from fastmed.data.split import stratified_split
from fastmed.engine import distributed
from fastmed.engine.checkpoint import make_checkpoint
from fastmed.engine.device import autocast
from fastmed.engine.metrics import roc_auc
from fastmed.engine.training_run import RunSummary, start_run
from fastmed.errors import DataError
from fastmed.nets.mil import AttentionMIL
from fastmed.wsi.bags import (BagBatch, BagDataset, BagRef, SlideBag, bag_loader, collate, index_bags, read_bag, read_labels,
                               release_large_buffers, without_features)
from fastmed.wsi.losses import attention_patch_loss, bag_loss, patch_loss, topk_instance_loss
from fastmed.wsi.metrics import binary_metrics

def mil_losses(out: dict[str, torch.Tensor], batch: BagBatch, weights: dict[str, float], top_k: int,
               patch_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The weighted losses of one ragged batch; ``total`` is their sum. Zero-weight terms are skipped."""
    terms: dict[str, torch.Tensor] = {}
    if weights["bag"]:
        terms["bag"] = bag_loss(out["bag"], batch.labels)
    if weights["patch"]:
        rows = torch.nonzero(batch.patch_labels >= 0).squeeze(1)
        if len(rows) > patch_samples:  # labelled patches drawn across the batch's slides
            rows = rows[torch.randperm(len(rows), generator=generator)[:patch_samples].to(rows.device)]
        terms["patch"] = patch_loss(out["patch"][rows], batch.patch_labels[rows])
    if weights["topk"]:
        terms["topk"] = topk_instance_loss(out["instance"], out["attention"], batch.offsets, batch.labels, top_k)
    if weights["attn"]:
        terms["attn"] = attention_patch_loss(out["attention"], out["patch"], batch.patch_labels)
    total = sum(weights[k] * v for k, v in terms.items())
    return {**terms, "total": total}


def keep_patch_labels(slides: Sequence[SlideBag | BagRef], fraction: float, seed: int) -> tuple[frozenset[str], list[str]]:
    """Which positive slides keep their patch labels: ``round(fraction * positives)`` of them, drawn with ``seed``.

    The other positive slides count as unannotated (``BagDataset(hidden=...)``
    gives them patch labels ``-1``), so losses 1 and 4 never see them; negative
    slides keep theirs (all-negative by definition). Returns the hidden ids and
    the ids of the positive slides that kept their labels.
    """
    positives = [i for i, b in enumerate(slides) if b.label == 1]
    n_keep = round(fraction * len(positives))
    chosen = {positives[j] for j in np.random.default_rng(seed).permutation(len(positives))[:n_keep]}
    hidden = frozenset(slides[i].slide_id for i in positives if i not in chosen)
    return hidden, [slides[i].slide_id for i in sorted(chosen)]


def negatives_only_warning(cfg, train: Sequence[SlideBag | BagRef], kept: list[str]) -> str | None:
    """A warning when losses 1 and 4 are on but no positive training slide of ``kept`` carries patch labels.

    Negative slides are all-0 by definition, so those losses then see only
    negative patches and push every patch probability and attention towards 0:
    with 0 % of the positives annotated, ``benchmarks/wsi_evidence_regimes.py``
    measured inverted maps (patch AUC 0.27) and slide AUC 0.62 against 0.89
    with the two losses off.
    """
    if cfg.w_patch == 0 and cfg.w_attn == 0:
        return None
    kept_ids = set(kept)
    if any(_has_patch_labels(bag) for bag in train if bag.slide_id in kept_ids):
        return None
    return ("no positive training slide has patch labels (annotations), so losses 1 and 4 see only negative patches "
            "and pull every map towards 0; without annotations use --w-patch 0 --w-attn 0")


def _has_patch_labels(bag: SlideBag | BagRef) -> bool:
    """Whether a slide has any known patch label."""
    return bag.annotated if isinstance(bag, BagRef) else bool((bag.patch_labels >= 0).any())


@torch.no_grad()
def predict_bags(model: AttentionMIL, bags: list[SlideBag], device: torch.device, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
    """Per slide: ``prob`` (scalar), ``attention`` raw scores, ``patch_prob`` ``(n,)`` (model in eval mode)."""
    model.eval()
    results = []
    for i in range(0, len(bags), batch_size):
        chunk = bags[i:i + batch_size]
        batch = collate(chunk).to(device)
        out = model(batch.x, batch.offsets)
        offs = batch.offsets.cpu().tolist()
        bag_p = torch.sigmoid(out["bag"]).float().cpu().numpy()
        att = out["attention"].float().cpu().numpy()
        pp = torch.sigmoid(out["patch"]).float().cpu().numpy()
        for b in range(len(chunk)):
            lo, hi = offs[b], offs[b + 1]
            results.append({"prob": float(bag_p[b]), "attention": att[lo:hi], "patch_prob": pp[lo:hi]})
    return results


def evaluate_bags(model: AttentionMIL, bags: Sequence[SlideBag], device: torch.device, threshold: float,
                  batch_size: int = 8) -> dict[str, float]:
    """Slide metrics (``auc``, ``acc``, ``f1``, ``loss``) and patch AUCs where patch labels exist.

    ``bags`` is read once, ``batch_size`` slides at a time (a streamed ``BagDataset`` holds no more in memory).
    """
    if not len(bags):
        return {}
    seen, preds = [], []
    for i in range(0, len(bags), batch_size):
        chunk = [bags[j] for j in range(i, min(i + batch_size, len(bags)))]
        preds += predict_bags(model, chunk, device, batch_size)
        seen += [without_features(b) for b in chunk]
    bags = seen  # labels and patch labels only
    y = np.array([b.label for b in bags])
    prob = np.array([p["prob"] for p in preds])
    metrics = binary_metrics(y, prob, threshold)
    p = np.clip(prob, 1e-6, 1 - 1e-6)
    metrics["loss"] = float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())
    metrics.update(patch_localization(bags, preds))
    return metrics


def patch_localization(bags: list[SlideBag], preds: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Patch AUC against the patch labels of ``attention`` (sigmoid of the score), ``patch_prob`` and their product."""
    ys, att, pp = [], [], []
    for bag, pred in zip(bags, preds):
        known = bag.patch_labels.numpy() >= 0
        ys.append(bag.patch_labels.numpy()[known])
        att.append(1 / (1 + np.exp(-pred["attention"][known])))
        pp.append(pred["patch_prob"][known])
    if not ys or sum(len(v) for v in ys) == 0:
        return {}
    y, a, q = np.concatenate(ys), np.concatenate(att), np.concatenate(pp)
    out = {"patch_auc_attention": roc_auc(y, a), "patch_auc_prob": roc_auc(y, q), "patch_auc_combined": roc_auc(y, a * q)}
    return {k: v for k, v in out.items() if not math.isnan(v)}


class WsiTrainTask:
    """The ``TrainTask`` of attention MIL (see ``fastmed.engine.fit``)."""

    def __init__(self, cfg, train: list[SlideBag] | list[BagRef], val: Sequence[SlideBag], device: torch.device,
                 meta: dict[str, Any]):
        """``train``: bags in memory, or ``BagRef``s read at each step; ``val``: bags, or a ``BagDataset`` of refs."""
        self.cfg, self.val, self.device, self.meta = cfg, val, device, meta
        hidden, meta["patch_label_slides"] = keep_patch_labels(train, cfg.patch_label_fraction, cfg.seed)
        self.train = BagDataset(train, cfg.max_patches, cfg.seed, hidden)
        self.in_dim = int(train[0].dim if isinstance(train[0], BagRef) else train[0].features.shape[1])
        self.arch_kwargs = {"in_dim": self.in_dim, "hidden": cfg.hidden, "attn_dim": cfg.attn_dim,
                            "dropout": cfg.dropout, "normalize": cfg.normalize}
        self.model = AttentionMIL(**self.arch_kwargs)
        self.model.set_feature_stats(*self.train.feature_stats())
        self.model = distributed.wrap_model(self.model.to(device), device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.weights = {"patch": cfg.w_patch, "bag": cfg.w_bag, "topk": cfg.w_topk, "attn": cfg.w_attn}
        self.gen = torch.Generator().manual_seed(cfg.seed + distributed.rank())  # torchrun: patch draws differ by rank
        self.rank_batch = distributed.per_rank_batch(cfg.batch_size)

    def train_batches(self, epoch: int) -> Iterable[BagBatch]:
        order = distributed.epoch_order(len(self.train), self.cfg.seed, epoch, self.gen)  # torchrun: this rank's slides
        self.train.set_epoch(epoch)
        return bag_loader(self.train, [order[i:i + self.rank_batch] for i in range(0, len(order), self.rank_batch)],
                          self.cfg.workers)

    def train_step(self, batch: BagBatch) -> dict[str, float]:
        self.model.train()
        batch = batch.to(self.device)
        with autocast(self.device, self.cfg.amp):
            out = self.model(batch.x, batch.offsets)
        losses = mil_losses({k: v.float() for k, v in out.items()}, batch, self.weights, self.cfg.top_k,
                            self.cfg.patch_samples, self.gen)
        self.opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.opt.step()
        return {f"loss_{k}" if k != "total" else "loss": float(v.detach()) for k, v in losses.items()}

    def evaluate(self) -> dict[str, float]:
        return evaluate_bags(self.model, self.val, self.device, self.cfg.threshold)

    def checkpoint(self) -> dict[str, Any]:
        return make_checkpoint(self.model, task="wsi", kind="mil", arch="attention_mil", arch_kwargs=self.arch_kwargs,
                               class_names=self.meta["class_names"], meta={k: v for k, v in self.meta.items() if k != "class_names"})

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.opt.state_dict(), "generator": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
        if "generator" in state:
            self.gen.set_state(state["generator"])


def prepare(cfg) -> tuple[list[SlideBag] | list[BagRef], Sequence[SlideBag], dict[str, Any]]:
    """Index the slides, split them, and build the checkpoint metadata (``meta["skipped_slides"]``: slides left out).

    Without ``cfg.stream`` the slides are read into memory (as stored: float16
    files stay float16); with it they stay ``BagRef``s, read at each step.
    """
    labels = read_labels(cfg.labels)
    skipped: list[str] = []
    refs = index_bags(cfg.features, labels, cfg.positive, skipped)
    if skipped:
        print(f"  {len(skipped)} slide(s) without a label or patches skipped: {', '.join(skipped[:10])}")
    classes = sorted({r.label for r in refs})
    if classes != [0, 1]:
        raise DataError(f"training needs slides of both classes ({cfg.positive!r} and others); found labels {classes} in {cfg.labels}")
    train_idx, val_idx = stratified_split([r.label for r in refs], cfg.val_fraction, cfg.seed)
    train_refs, val_refs = [refs[i] for i in train_idx], [refs[i] for i in val_idx]
    train = train_refs if cfg.stream else [read_bag(r) for r in train_refs]
    val = BagDataset(val_refs) if cfg.stream else [read_bag(r) for r in val_refs]
    negatives = sorted({v for v in labels.values() if v != cfg.positive})
    a = refs[0].attrs
    meta = {
        "class_names": ["/".join(negatives) or "normal", cfg.positive],
        "positive": cfg.positive,
        "threshold": cfg.threshold,
        "encoder": {k: a.get(k) for k in ("encoder", "encoder_weights", "feature_dim", "encoder_seed", "encoder_sha256")},
        "patches": {k: a.get(k) for k in ("patch_size", "mpp", "mode")},
        "train_slides": [r.slide_id for r in train_refs],
        "val_slides": [r.slide_id for r in val_refs],
        "skipped_slides": list(skipped),
    }
    return train, val, meta


def run_train(cfg) -> RunSummary:
    """CLI runner of ``fastmed wsi train``; returns the run's summary (best epoch by validation loss, when slides are held out)."""
    session = start_run(cfg, "wsi", "train")
    if cfg.stream:
        release_large_buffers()  # this process too receives and frees batch-sized buffers
    train, val, meta = prepare(cfg)
    task = WsiTrainTask(cfg, train, val, session.device, meta)
    print(f"wsi train: {len(train)} train / {len(val)} val slides, {task.in_dim} features"
          f"{' (streamed from the files)' if cfg.stream else ''}; run folder {session.path}")
    warning = negatives_only_warning(cfg, train, meta["patch_label_slides"])
    if warning:
        print(f"  warning: {warning}")
    summary = session.fit(task, monitor="val/loss" if val else None, mode="min", title="wsi attention MIL",
                          skipped=len(meta["skipped_slides"]))
    print(f"done: {({k: round(v, 4) for k, v in summary.metrics.items() if k.startswith('val/')})}")
    return summary
