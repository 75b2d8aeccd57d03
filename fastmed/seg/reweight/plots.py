"""Pictures of a reweighting run: gamma and the gradient agreements d_k over training, validation overlays."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fastmed.data.images import write_png  # noqa: E402
from fastmed.data.transforms import denormalize  # noqa: E402


def plot_gamma(history: list[tuple[int, np.ndarray]], path: Path, wrong: np.ndarray | None = None) -> Path:
    """One line per rough image (red: known-wrong rough mask, blue: right, grey: unknown) of gamma against step."""
    steps = np.array([s for s, _ in history])
    g = np.stack([h for _, h in history])  # (updates, images)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in range(g.shape[1]):
        color = "grey" if wrong is None else ("tab:red" if wrong[k] else "tab:blue")
        ax.plot(steps, g[:, k], color=color, alpha=0.5, lw=1)
    if wrong is not None:
        ax.plot([], [], color="tab:red", label="wrong rough mask")
        ax.plot([], [], color="tab:blue", label="right rough mask")
        ax.legend(fontsize=8, loc="lower left")
    ax.set_xlabel("training step")
    ax.set_ylabel("weight gamma")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("rough-image weights over training")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_dots(dot_history: list[tuple[int, np.ndarray, np.ndarray]], path: Path, wrong: np.ndarray | None = None) -> Path:
    """Quantile bands (10-90 %, 25-75 %, median) of d_k = g_S . g_k against step; with ``wrong`` known,
    the mean d of the wrong (red) and right (blue) rough masks of each pool."""
    steps = np.array([s for s, _, _ in dot_history])
    q = np.array([np.quantile(d, [0.1, 0.25, 0.5, 0.75, 0.9]) for _, _, d in dot_history])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.fill_between(steps, q[:, 0], q[:, 4], color="grey", alpha=0.25, lw=0, label="10-90 %")
    ax.fill_between(steps, q[:, 1], q[:, 3], color="grey", alpha=0.45, lw=0, label="25-75 %")
    ax.plot(steps, q[:, 2], color="black", lw=1, label="median")
    if wrong is not None:
        for bad, color, label in ((True, "tab:red", "mean, wrong rough masks"), (False, "tab:blue", "mean, right rough masks")):
            pts = [(s, d[wrong[i] == bad].mean()) for s, i, d in dot_history if (wrong[i] == bad).any()]
            if pts:
                ax.plot(*zip(*pts), color=color, lw=1, label=label)
    ax.axhline(0.0, color="black", lw=0.5, ls=":")
    ax.set_xlabel("training step")
    ax.set_ylabel("d_k = g_S . g_k")
    ax.set_title("gradient agreement of the rough images per update")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_overlays(ds, pred, folder: Path, n: int, overlay: Callable) -> list[Path]:
    """Side-by-side PNGs ``[truth (green) | prediction (red)]`` for the first ``n`` images of ``ds``."""
    out = []
    for i in range(min(n, len(ds))):
        img = (denormalize(ds.images[i]).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        truth = overlay(img, ds.masks[i, 0].numpy(), color=(40, 200, 40))
        guess = overlay(img, pred[i].numpy())
        pair = np.concatenate([truth, guess], axis=1)
        scale = max(1, 128 // pair.shape[0])  # small training sizes: enlarge (nearest) so a person can see them
        out.append(write_png(folder / f"{ds.items[i].id}.png", pair.repeat(scale, 0).repeat(scale, 1)))
    return out
