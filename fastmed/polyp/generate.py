"""``fastmed polyp generate``: a labelled generated dataset from a trained generator.

For every source image of ``DATA/train/<class>/`` (or ``DATA/<class>/``) and
``k < per_image``, ``G(image, class, noise_k)`` is written to
``OUT/<class>/<source stem>_g<k>.png``: generated images keep their source
class, so ``OUT`` is a class-folder dataset that ``fastmed polyp train
--extra-data OUT`` adds to the training set. ``OUT/manifest.csv`` records the
provenance of every image (file, class, source, generator weights, seed,
noise index); ``OUT/samples.png`` shows, per row, a source and its generated
images for up to 4 noise draws (4 sources per class). ``OUT/summary.json``
holds the counts and the ``gen_metrics`` measures over all sources (pixel
change, noise diversity between draws 0 and 1 – a second draw is made for the
measure when ``--per-image 1`` – feature spread, Sinkhorn divergence to the
real set, class agreement of the independent judge beside its accuracy on
real ``DATA/test`` or ``DATA/val`` images). Unreadable sources are skipped and
listed in ``OUT/skipped.txt``.
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
from fastmed.polyp.gen_metrics import Judge, generation_metrics, held_out_real
from fastmed.polyp.image_sets import load_class_folders


@torch.no_grad()
def generate_batch(G: torch.nn.Module, x01: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``G`` on images ``(B, 3, H, W)`` in [0, 1] with classes ``(B,)`` and fresh noise → images in [0, 1]."""
    noise = torch.randn(x01.shape[0], G.noise_channels, *x01.shape[2:], generator=gen).to(x01.device)
    return ((G(x01 * 2 - 1, labels, noise) + 1) / 2).clamp(0, 1)


def save_samples_grid(sources: torch.Tensor, draws: list[torch.Tensor], class_names: list[str], path: Path) -> None:
    """One row per source: the source ``(N, 3, H, W)`` in [0, 1], then its generated images for every noise draw
    (``draws``: per noise ``(N, 3, H, W)``), titled with the class and the noise index."""
    cols = [sources] + list(draws)
    images = torch.stack(cols, 1).flatten(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    titles = [t for c in class_names for t in [f"{c} source"] + [f"noise {k}" for k in range(len(draws))]]
    save_image_grid(images, path, titles=titles, ncols=len(cols) * (2 if len(cols) <= 4 else 1))


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
    judge = Judge.from_checkpoint(cfg.judge or ckpt["judge"], device, "--judge" if cfg.judge else f"{cfg.weights}'s judge") \
        if cfg.judge or "judge" in ckpt else None
    gen = torch.Generator().manual_seed(cfg.seed)
    rows: list[dict[str, Any]] = []
    first_draws: list[list[torch.Tensor]] = [[], []]  # draws 0 and 1 of every source, for the measures
    batches = range(0, len(data.labels), cfg.batch_size)
    for start in progress(batches, desc="generate", enabled=cfg.progress):
        x01 = data.images[start:start + cfg.batch_size].to(device)
        y = data.labels[start:start + cfg.batch_size].to(device)
        for k in range(max(cfg.per_image, 2)):
            fake01 = generate_batch(G, x01, y, gen)
            if k < 2:
                first_draws[k].append(fake01.cpu())
            if k >= cfg.per_image:
                continue  # the second draw of --per-image 1: measured, not written
            fake = _to_uint8(fake01)
            for i in range(len(y)):
                path = data.paths[start + i]
                cls = names[int(y[i])]
                dest = write_png(out / cls / f"{path.stem}_g{k}.png", fake[i])
                rows.append({"file": str(dest.relative_to(out)), "class": cls, "source": str(path), "noise_index": k,
                             "generator": str(cfg.weights), "seed": cfg.seed})
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    draw0, draw1 = torch.cat(first_draws[0]), torch.cat(first_draws[1])
    real_test, real_split = held_out_real(cfg.data, names, size) if judge else (None, "")
    metrics = generation_metrics(data.images, data.labels, draw0, draw1, judge, real_test)
    grid_idx = torch.cat([torch.nonzero(data.labels == k).flatten()[:4] for k in range(len(names))])
    grid_draws = [draw0[grid_idx], draw1[grid_idx]] + [
        generate_batch(G, data.images[grid_idx].to(device), data.labels[grid_idx].to(device), gen).cpu() for _ in range(2)]
    save_samples_grid(data.images[grid_idx], grid_draws, [names[int(c)] for c in data.labels[grid_idx]], out / "samples.png")
    if data.skipped:
        (out / "skipped.txt").write_text(format_skipped(data.skipped, limit=10**9) + "\n", encoding="utf-8")
        print(format_skipped(data.skipped))
    counts = {c: sum(r["class"] == c for r in rows) for c in names}
    summary = {"out": str(out), "images": len(rows), "per_class": counts, "skipped": len(data.skipped),
               "manifest": str(out / "manifest.csv"), "samples": str(out / "samples.png"), "metrics": metrics,
               "judge": str(cfg.judge) if cfg.judge else ("the generator's judge" if judge else None),
               "judge_real_split": real_split or None}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} generated images to {out} ({counts}); manifest {out / 'manifest.csv'}")
    print("generated-set measures: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    return summary
