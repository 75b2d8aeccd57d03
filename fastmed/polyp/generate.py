"""``fastmed polyp generate``: a labelled generated dataset from a trained generator.

For every source image of ``DATA/train/<class>/`` (or ``DATA/<class>/``) and
``k < per_image``, ``G(image, class, noise_k)`` is written to
``OUT/<class>/<source stem>_g<k>.png``: generated images keep their source
class, so ``OUT`` is a class-folder dataset that ``fastmed polyp train
--extra-data OUT`` adds to the training set. ``OUT/manifest.csv`` records the
provenance of every image (file, class, source, generator weights, seed,
noise index); ``OUT/samples.png`` shows sources next to generated images.
Unreadable sources are skipped and listed in ``OUT/skipped.txt``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastmed.cfg.polyp import PolypGenerateConfig
from fastmed.data.folders import format_skipped
from fastmed.data.images import write_png
from fastmed.engine.checkpoint import load_model
from fastmed.engine.device import select_device
from fastmed.engine.plots import save_image_grid
from fastmed.engine.progress import progress
from fastmed.engine.safe_names import safe_component
from fastmed.engine.seed import seed_everything
from fastmed.errors import FastmedError
from fastmed.polyp.image_sets import load_class_folders


@torch.no_grad()
def generate_batch(G: torch.nn.Module, x01: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``G`` on images ``(B, 3, H, W)`` in [0, 1] with classes ``(B,)`` and fresh noise → images in [0, 1]."""
    noise = torch.randn(x01.shape[0], G.noise_channels, *x01.shape[2:], generator=gen).to(x01.device)
    return ((G(x01 * 2 - 1, labels, noise) + 1) / 2).clamp(0, 1)


def _to_uint8(x01: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] → ``(B, H, W, 3)`` uint8."""
    return (x01.permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def run_generate(cfg: PolypGenerateConfig) -> dict[str, Any]:
    """Write the generated dataset; return a summary (counts, output folder)."""
    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    G, ckpt = load_model(cfg.weights, map_location=device)
    if ckpt.get("kind") != "generator":
        raise FastmedError(f"--weights {cfg.weights} is a {ckpt.get('kind')!r} checkpoint, not a generator of `fastmed polyp augment`")
    names = [safe_component(n, f"{cfg.weights}: class name") for n in ckpt["class_names"]]  # each names a folder of OUT
    size = int(ckpt["input_size"][0])
    data = load_class_folders(cfg.data, size, names)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    grid: list[np.ndarray] = []
    shown = {k: 0 for k in range(len(names))}
    batches = range(0, len(data.labels), cfg.batch_size)
    for start in progress(batches, desc="generate", enabled=cfg.progress):
        x01 = data.images[start:start + cfg.batch_size].to(device)
        y = data.labels[start:start + cfg.batch_size].to(device)
        src = _to_uint8(x01)
        for k in range(cfg.per_image):
            fake = _to_uint8(generate_batch(G, x01, y, gen))
            for i in range(len(y)):
                path = data.paths[start + i]
                cls = names[int(y[i])]
                dest = write_png(out / cls / f"{path.stem}_g{k}.png", fake[i])
                rows.append({"file": str(dest.relative_to(out)), "class": cls, "source": str(path), "noise_index": k,
                             "generator": str(cfg.weights), "seed": cfg.seed})
                if k == 0 and shown[int(y[i])] < 4:
                    shown[int(y[i])] += 1
                    grid += [src[i], fake[i]]
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_image_grid(np.stack(grid), out / "samples.png", titles=["source", "generated"] * (len(grid) // 2), ncols=8)
    if data.skipped:
        (out / "skipped.txt").write_text(format_skipped(data.skipped, limit=10**9) + "\n", encoding="utf-8")
        print(format_skipped(data.skipped))
    counts = {c: sum(r["class"] == c for r in rows) for c in names}
    summary = {"out": str(out), "images": len(rows), "per_class": counts, "skipped": len(data.skipped),
               "manifest": str(out / "manifest.csv"), "samples": str(out / "samples.png")}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} generated images to {out} ({counts}); manifest {out / 'manifest.csv'}")
    return summary
