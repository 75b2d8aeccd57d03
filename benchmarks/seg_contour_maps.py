"""Throughput of the contour labels: correlation maps per second, Numba EDT vs SciPy EDT.

For synthetic images (1-3 objects) at 64x64 and 256x256, times
``correlation_maps`` (rasterized contours -> per-object distance/feature
transform -> per-object and fused maps) with fastmed's batch EDT against the
same maps built on ``scipy.ndimage.distance_transform_edt`` (one call per
object), and the full label pipeline (read PNG + GeoJSON, rasterize, maps).
Medians of interleaved repeats, same process, shared 2-core machine.

    .venv/bin/python benchmarks/seg_contour_maps.py

Writes ``benchmarks/results/seg_contour_maps.json``, ``.md`` and an example figure ``.png``.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from fastmed.seg.contour import correlation as corr_mod
from fastmed.seg.contour.correlation import CorrelationParams, correlation_maps
from fastmed.seg.contour.dataset import contour_labels
from fastmed.seg.contour.figure import save_label_figure
from fastmed.seg.data import scan_seg_split

RESULTS = Path(__file__).resolve().parent / "results"


def scipy_batch_edt(inputs, sampling=None, return_indices=False):
    """SciPy stand-in for ``distance_transform_edt_batch`` (one call per image)."""
    pairs = [ndi.distance_transform_edt(m, sampling=sampling, return_indices=True) for m in inputs]
    dist = np.stack([d for d, _ in pairs])
    return (dist, np.stack([i for _, i in pairs])) if return_indices else dist


def median_per_image(fn, inputs, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean seconds of ``fn(x)`` per input."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in inputs:
            fn(x)
        times.append((time.perf_counter() - t0) / len(inputs))
    return float(np.median(times))


def main() -> None:
    from fastmed.data.synthetic.seg import make_seg_dataset

    params = CorrelationParams()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in (64, 256):
            root = make_seg_dataset(Path(tmp) / f"s{size}", {"train": 24}, seed=0, size=size)
            items = scan_seg_split(root / "train").items
            labels = [contour_labels(it, size, params) for it in items]
            if size == 64:  # the example figure: image | contours | distance | correlations | mask
                multi = sorted(labels, key=lambda lab: -len(lab.contours))
                save_label_figure(RESULTS / "seg_contour_maps.png", multi[:3], f"correlation maps, {vars(params)}")
            maps = lambda lab: correlation_maps(lab.image, lab.contours, params)  # noqa: E731
            numba_edt = corr_mod.distance_transform_edt_batch
            t = {}
            for _ in range(2):  # interleave the two EDT backends
                corr_mod.distance_transform_edt_batch = scipy_batch_edt
                t.setdefault("scipy_edt", []).append(median_per_image(maps, labels, 3))
                corr_mod.distance_transform_edt_batch = numba_edt
                t.setdefault("fastmed_edt", []).append(median_per_image(maps, labels, 3))
            full = median_per_image(lambda it: contour_labels(it, size, params), items, 3)
            row = {"image_size": size, "objects_mean": float(np.mean([len(lab.contours) for lab in labels])),
                   "maps_ms_fastmed": 1000 * min(t["fastmed_edt"]), "maps_ms_scipy": 1000 * min(t["scipy_edt"]),
                   "labels_ms_full_pipeline": 1000 * full}
            row["speedup"] = row["maps_ms_scipy"] / row["maps_ms_fastmed"]
            rows.append(row)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seg_contour_maps.json").write_text(json.dumps({"rows": rows, "params": vars(params)}, indent=2))
    lines = ["# Correlation-map throughput (per image, shared 2-core machine)", "",
             "| image | objects (mean) | maps, fastmed EDT (ms) | maps, SciPy EDT (ms) | speedup | full labels: PNG+GeoJSON+raster+maps (ms) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['image_size']}² | {r['objects_mean']:.1f} | {r['maps_ms_fastmed']:.2f} | {r['maps_ms_scipy']:.2f} | "
              f"{r['speedup']:.2f}x | {r['labels_ms_full_pipeline']:.2f} |" for r in rows]
    lines += ["", f"Parameters {vars(params)}; best of 2 interleaved medians of 3 passes over 24 images.", ""]
    (RESULTS / "seg_contour_maps.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
