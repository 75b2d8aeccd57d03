"""Pictures of a reweighting run: gamma over training, validation overlays."""
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
