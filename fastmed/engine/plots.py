"""PNG plots a person would rather look at than read (matplotlib, Agg backend)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(records: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> Path | None:
    """One panel per metric name (``train/x`` and ``val/x`` share a panel) against epoch."""
    if not records:
        return None
    keys = sorted({k for r in records for k, v in r.items() if "/" in k and isinstance(v, (int, float))})
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split("/", 1)[1], []).append(k)
    n = len(groups)
    if n == 0:
        return None
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, (name, ks) in zip(axes.flat, sorted(groups.items())):
        for k in ks:
            pts = [(r["epoch"], r[k]) for r in records if k in r and "epoch" in r]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", ms=3, label=k.split("/", 1)[0])
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = "confusion matrix") -> Path:
    """Confusion matrix (rows: true class, columns: predicted) with counts in the cells."""
    cm = np.asarray(cm)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.2 * k + 1.5))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > thresh else "black")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save_image_grid(images: np.ndarray, path: str | os.PathLike, titles: Sequence[str] | None = None, ncols: int = 8) -> Path:
    """Save ``images`` ``(N, H, W, 3)`` uint8 (or floats in [0, 1]) as one grid PNG."""
    images = np.asarray(images)
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.7 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i])
            if titles is not None:
                ax.set_title(titles[i], fontsize=7)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
