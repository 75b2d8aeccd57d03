"""Small deterministic datasets written in the real layouts (see each module).

``make_synthetic(root, seed, size)`` writes ``root/polyp`` (class folders),
``root/seg`` (Kvasir-SEG layout + rough masks + GeoJSON contours) and
``root/slides`` (pyramidal TIFF + labels.csv + GeoJSON), so that the demo and
the tests run the real readers end to end. The same seed writes the same files.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

from fastmed.data.synthetic.polyp import make_polyp_dataset
from fastmed.data.synthetic.seg import make_seg_dataset
from fastmed.data.synthetic.slides import make_slides
from fastmed.errors import ConfigError

# per size: polyp images per class per split, seg images per split, slides (count, height, width)
SIZES = {
    "tiny": {"polyp": {"train": 12, "val": 6, "test": 6, "test_shift": 6}, "seg": {"train": 16, "val": 6, "test": 6}, "slides": (4, 768, 1024)},
    "small": {"polyp": {"train": 60, "val": 20, "test": 20, "test_shift": 20}, "seg": {"train": 60, "val": 16, "test": 16}, "slides": (8, 1024, 1536)},
    "demo": {"polyp": {"train": 80, "val": 24, "test": 24, "test_shift": 24}, "seg": {"train": 48, "val": 12, "test": 12}, "slides": (8, 1024, 1536)},
    "large": {"polyp": {"train": 400, "val": 100, "test": 100, "test_shift": 100}, "seg": {"train": 400, "val": 80, "test": 80}, "slides": (32, 2048, 3072)},
}
PARTS = ("polyp", "seg", "slides")


def make_synthetic(root: str | os.PathLike, seed: int = 0, size: str = "small", parts: Sequence[str] = PARTS, shift: float = 1.0,
                   image_size: int = 64, seg_outlines: dict | None = None) -> Path:
    """Write the requested ``parts`` under ``root``; return ``root``.

    ``seg_outlines``: imprecise-outline options of ``make_seg_dataset``
    (``contour_vertices``, ``contour_jitter``, ``touching``).

    A part whose folder already holds a ``.complete`` marker for the same
    arguments is left as is, so repeated demo runs reuse their data.
    """
    if size not in SIZES:
        raise ConfigError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"unknown synthetic part(s) {bad}; parts: {', '.join(PARTS)}")
    root = Path(root)
    spec = SIZES[size]
    for part in parts:
        marker = root / part / ".complete"
        stamp = f"seed={seed} size={size} shift={shift} image_size={image_size}"
        if part == "seg" and seg_outlines:
            stamp += "".join(f" {k}={v}" for k, v in sorted(seg_outlines.items()))
        if marker.exists() and marker.read_text() == stamp:
            continue
        if part == "polyp":
            make_polyp_dataset(root / "polyp", spec["polyp"], seed=seed, size=image_size, shift=shift)
        elif part == "seg":
            make_seg_dataset(root / "seg", spec["seg"], seed=seed, size=image_size, **(seg_outlines or {}))
        else:
            n, h, w = spec["slides"]
            make_slides(root / "slides", n, seed=seed, height=h, width=w)
        marker.write_text(stamp)
    return root


def run_synth(cfg) -> int:
    """CLI runner of ``fastmed synth``."""
    t0 = time.perf_counter()
    given = {"contour_vertices": cfg.contour_vertices, "contour_jitter": cfg.contour_jitter, "touching": cfg.touching}
    outlines = {k: v for k, v in given.items() if v}
    root = make_synthetic(cfg.out, seed=cfg.seed, size=cfg.size, parts=cfg.parts, shift=cfg.shift, image_size=cfg.image_size,
                          seg_outlines=outlines)
    print(f"wrote synthetic data ({cfg.size}, seed {cfg.seed}) to {root} in {time.perf_counter() - t0:.1f} s: {', '.join(cfg.parts)}")
    return 0
