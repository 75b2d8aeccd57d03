"""Supervised image classification: a ``TrainTask`` for the fit loop, and batch prediction.

Shared by every task that trains or runs a classifier (the polyp recognizer,
the distillation baselines, prediction from any classifier checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fastmed.data.folders import ClassFolderDataset, Sample
from fastmed.data.images import read_image
from fastmed.data.transforms import classification_transform
from fastmed.engine import distributed
from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD, make_checkpoint
from fastmed.engine.device import autocast
from fastmed.engine.metrics import accuracy, confusion_matrix, macro_f1
from fastmed.engine.plots import plot_confusion
from fastmed.engine.precise_bn import recompute_bn_stats
from fastmed.engine.schedule import set_lr
from fastmed.errors import DataError


class ClassifierTask:
    """Cross-entropy training of a registered classifier on class-folder samples.

    ``batch_size`` is the global batch: under torchrun each rank takes its share
    (``engine.distributed``).

    ``evaluate`` reports ``loss``, ``acc`` and ``macro_f1`` on ``val_samples``
    and keeps the last confusion matrix in ``self.last_confusion``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        arch: str,
        arch_kwargs: dict[str, Any],
        class_names: Sequence[str],
        train_samples: Sequence[Sample],
        val_samples: Sequence[Sample],
        image_size: int,
        device: torch.device,
        epochs: int,
        batch_size: int = 32,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        workers: int = 0,
        augment: bool = True,
        amp: bool = True,
        seed: int = 0,
        task: str = "polyp",
        meta: dict[str, Any] | None = None,
    ):
        self.model = distributed.wrap_model(model.to(device), device, distributed.per_rank_batch(batch_size))
        self.arch, self.arch_kwargs, self.class_names = arch, dict(arch_kwargs), list(class_names)
        self.image_size, self.device, self.amp, self.task, self.meta = image_size, device, amp, task, dict(meta or {})
        gen = torch.Generator().manual_seed(seed)
        train_ds = ClassFolderDataset(train_samples, classification_transform(image_size, train=augment))
        val_ds = ClassFolderDataset(val_samples, classification_transform(image_size, train=False))
        self.train_loader = distributed.train_loader(train_ds, batch_size=batch_size, shuffle=True, drop_last=len(train_ds) > batch_size, num_workers=workers, generator=gen)
        self.val_loader = torch.utils.data.DataLoader(val_ds, batch_size=max(batch_size, 64), num_workers=workers)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.base_lr, self.step, self.total_steps = lr, 0, max(1, epochs * len(self.train_loader))
        self.last_confusion: np.ndarray | None = None

    def train_batches(self, epoch: int):
        self.model.train()
        return self.train_loader

    def train_step(self, batch) -> dict[str, float]:
        x, y = batch[0].to(self.device), batch[1].to(self.device)
        with autocast(self.device, self.amp):
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        set_lr(self.optimizer, self.base_lr, self.step, self.total_steps)
        self.optimizer.step()
        self.step += 1
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y).float().mean().item()}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation metrics, after re-estimating BatchNorm statistics (see ``engine.precise_bn``)."""
        recompute_bn_stats(self.model, self.train_loader, self.device)
        if len(self.val_loader.dataset) == 0:
            return {}
        self.model.eval()
        losses, preds, labels = [], [], []
        for x, y in self.val_loader:
            x, y = x.to(self.device), y.to(self.device)
            with autocast(self.device, self.amp):
                logits = self.model(x).float()
            losses.append(F.cross_entropy(logits, y, reduction="sum").item())
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
        p, t = torch.cat(preds).numpy(), torch.cat(labels).numpy()
        cm = confusion_matrix(t, p, len(self.class_names))
        self.last_confusion = cm
        return {"loss": sum(losses) / len(t), "acc": accuracy(cm), "macro_f1": macro_f1(cm)}

    def checkpoint(self) -> dict[str, Any]:
        return make_checkpoint(
            self.model, task=self.task, kind="classifier", arch=self.arch, arch_kwargs=self.arch_kwargs,
            class_names=self.class_names, input_size=[self.image_size, self.image_size],
            normalization={"mean": IMAGENET_MEAN, "std": IMAGENET_STD}, meta=self.meta,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))

    def save_confusion(self, path: str | os.PathLike, title: str = "validation confusion matrix") -> Path | None:
        """PNG of the last validation confusion matrix (None before any evaluation)."""
        if self.last_confusion is None:
            return None
        return plot_confusion(self.last_confusion, self.class_names, path, title)


@torch.no_grad()
def predict_paths(model: torch.nn.Module, ckpt: dict[str, Any], paths: Sequence[Path], device: torch.device, batch_size: int = 64) -> tuple[list[Path], np.ndarray, list[tuple[Path, str]]]:
    """Class probabilities for image files with a classifier checkpoint's preprocessing.

    Returns ``(paths read, probabilities (N, C), skipped (path, reason))``;
    unreadable images are skipped, never fatal.
    """
    size = ckpt.get("input_size") or [224, 224]
    norm = ckpt.get("normalization") or {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    tf = classification_transform(int(size[0]), train=False, mean=norm["mean"], std=norm["std"])
    model = model.to(device).eval()
    done: list[Path] = []
    probs: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    for start in range(0, len(paths), batch_size):
        batch, names = [], []
        for p in paths[start:start + batch_size]:
            try:
                batch.append(tf(read_image(p)))
                names.append(Path(p))
            except DataError as exc:
                skipped.append((Path(p), str(exc)))
        if batch:
            logits = model(torch.stack(batch).to(device)).float()
            probs.append(torch.softmax(logits, 1).cpu().numpy())
            done += names
    n_classes = len(ckpt.get("class_names") or []) or (probs[0].shape[1] if probs else 0)
    return done, (np.concatenate(probs) if probs else np.zeros((0, n_classes), np.float32)), skipped


def evaluate_class_folder(model: torch.nn.Module, ckpt: dict[str, Any], root: str | os.PathLike, device: torch.device, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrix of a classifier on a labelled ``root/<class>/`` folder.

    Class folders are matched by name to the checkpoint's ``class_names``.
    """
    from fastmed.data.folders import scan_class_folders

    names = list(ckpt.get("class_names") or [])
    scan = scan_class_folders(root, names or None)
    paths = [p for p, _ in scan.samples]
    label_of = {p: y for p, y in scan.samples}
    done, probs, skipped = predict_paths(model, ckpt, paths, device, batch_size)
    y_true = np.array([label_of[p] for p in done], dtype=int)
    cm = confusion_matrix(y_true, probs.argmax(1), len(scan.class_names))
    return {"n": len(done), "acc": accuracy(cm), "macro_f1": macro_f1(cm), "confusion": cm,
            "class_names": scan.class_names, "skipped": len(skipped) + len(scan.skipped)}
