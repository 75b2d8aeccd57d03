"""Run the C++ ``fastmed-run`` (built from ``cmake/``) from Python and read what it writes.

Used by the native parity tests (``tests/native``, ``cmake/tests/check_runner.py``)
and the export benchmark's C++ row.

>>> r = run_native("build/native/fastmed-run", "best.pt2", ["a.png", "b.jpg"], batch=7)
>>> r.paths, r.probs.shape, r.latency_ms["compute"]["p50"]
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fastmed.errors import FastmedError

# Agreement of fastmed-run with Predictor(best.pt): max |Δprob| (probabilities in [0, 1]).
# EXACT_TOL at the model's input size and for larger PNG/JPEG files: the runner resizes with the ATen kernel
# torchvision's Resize(antialias=True) runs on uint8 images and libjpeg-turbo decodes as PIL does, so only the
# compiled model's float rounding differs. ONE_STEP_RESIZE_TOL (with the same top-1 class) for images at least
# 8x the input size per side: Python first shrinks those by an integer box filter while decoding
# (fastmed.data.images.read_image), the runner resizes in one step (measured 0.069 on a tiny recognizer).
EXACT_TOL = 1e-5
ONE_STEP_RESIZE_TOL = 0.1

_LATENCY = re.compile(r"\[fastmed-run\] (\S+) ms/image: p50 (\S+) p95 (\S+) p99 (\S+)")
_SKIPPED = re.compile(r"\[fastmed-run\] skipped (.+?): ")


@dataclass
class NativeRun:
    """One ``fastmed-run`` call: its CSV rows, the files it skipped and its latency report (ms per image)."""

    returncode: int
    paths: list[str]
    classes: list[str]                    # the CSV's ``class`` column (arg-max names)
    class_names: list[str]                # from the ``prob_<name>`` header, in column order
    probs: np.ndarray                     # (N, C) float64
    skipped: list[str]
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # {"compute" | "decode+preprocess+compute": {"p50", "p95", "p99"}}
    stderr: str = ""


def read_prediction_csv(path: str | os.PathLike) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """``path,class,prob_<name>...`` → (paths, classes, class names, ``(N, C)`` probabilities)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    if header[:2] != ["path", "class"] or not all(h.startswith("prob_") for h in header[2:]):
        raise FastmedError(f"{path}: not a fastmed predictions CSV (header {header})")
    probs = np.array([[float(v) for v in r[2:]] for r in body], dtype=np.float64).reshape(len(body), len(header) - 2)
    return [r[0] for r in body], [r[1] for r in body], [h[len("prob_"):] for h in header[2:]], probs


def run_native(runner: str | os.PathLike, model: str | os.PathLike, images: Sequence[str | os.PathLike],
               csv_out: str | os.PathLike, batch: int = 1, warmup: int = 0, repeat: int = 1,
               threads: int = 0, timeout: float = 600) -> NativeRun:
    """Run ``runner --model model --csv csv_out ... images``; ``threads`` > 0 sets ``OMP_NUM_THREADS``."""
    env = dict(os.environ) | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    cmd = [str(runner), "--model", str(model), "--csv", str(csv_out), "--batch", str(batch),
           "--warmup", str(warmup), "--repeat", str(repeat), *map(str, images)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    latency = {m[1]: {"p50": float(m[2]), "p95": float(m[3]), "p99": float(m[4])} for m in _LATENCY.finditer(proc.stderr)}
    skipped = [m[1] for m in _SKIPPED.finditer(proc.stderr)]
    if Path(csv_out).is_file() and proc.returncode in (0, 1):
        paths, classes, names, probs = read_prediction_csv(csv_out)
    else:
        paths, classes, names, probs = [], [], [], np.zeros((0, 0))
    return NativeRun(proc.returncode, paths, classes, names, probs, skipped, latency, proc.stderr)


@dataclass
class ProbeImages:
    """Files to check a runner on (see :func:`write_probe_images`)."""

    at_size: list[Path]   # PNGs at the model's input size (no resize on either side)
    larger: list[Path]    # PNGs about 2x and 3x the input size, non-square (both sides resize)
    jpeg: list[Path]      # JPEGs at 2x the input size (decoded by libjpeg in C++, by PIL in Python)
    huge: list[Path]      # PNGs at 9x the input size: Python shrinks them while decoding (box reduce), C++ does not
    modes: list[Path]     # PNGs at the input size in grey, grey + alpha, RGBA, palette and 16-bit grey
    corrupt: list[Path]   # a truncated PNG and a text file named .jpg


def write_probe_images(folder: str | os.PathLike, images: Sequence[np.ndarray], size: Sequence[int]) -> ProbeImages:
    """Write ``images`` ((H, W, 3) uint8) at model ``size`` and larger, as PNG and JPEG, plus corrupt files."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = int(size[0]), int(size[1])
    probe = ProbeImages([], [], [], [], [], [])
    for i, im in enumerate(images):
        pil = Image.fromarray(im)
        for name, (ph, pw), kind, fmt in [("size", (h, w), probe.at_size, "png"),
                                          ("large", (2 * h + 5, 3 * w - 3) if i % 2 else (3 * h, 2 * w), probe.larger, "png"),
                                          ("jpeg", (2 * h, 2 * w), probe.jpeg, "jpg"),
                                          ("huge", (9 * h, 9 * w), probe.huge, "png")]:
            path = folder / f"{name}_{i}.{fmt}"
            pil.resize((pw, ph), Image.BICUBIC).save(path, quality=92)
            kind.append(path)
    small = Image.fromarray(images[0]).resize((w, h), Image.BICUBIC)
    grey16 = Image.fromarray((np.asarray(small.convert("L"), np.uint16) * 257 + 100).astype(np.uint16))
    for name, im in [("L", small.convert("L")), ("LA", small.convert("LA")), ("RGBA", small.convert("RGBA")),
                     ("P", small.convert("P", palette=Image.ADAPTIVE, colors=64)), ("I16", grey16)]:
        probe.modes.append(folder / f"mode_{name}.png")
        im.save(probe.modes[-1])
    truncated = folder / "truncated.png"
    truncated.write_bytes(probe.at_size[0].read_bytes()[:60])
    fake = folder / "not_an_image.jpg"
    fake.write_text("not a jpeg\n")
    probe.corrupt = [truncated, fake]
    return probe
