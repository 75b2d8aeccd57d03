"""Benchmark fastmed's Numba EDT against SciPy and the ``edt`` package.

Cases (medians of interleaved repeats; ratios are anchor time / our time, measured
in the same process):

* ``batch2d_indices``  — 32 masks of 512x512, distances + indices:
  ``distance_transform_edt_batch`` vs a loop of ``scipy.ndimage.distance_transform_edt``
  (also with Numba on one thread: per-core efficiency, robust to busy cores);
* ``batch2d_distances`` — the same masks, distances only: vs a loop of ``edt.edt``
  (single-threaded, and with ``parallel=<cores>``) and vs SciPy;
* ``volume3d_aniso``   — one anisotropic 3-D volume, with and without indices.

Two mask kinds: ``blobs`` (smooth random shapes, about half zeros) and ``sparse``
(0.2 % zeros, like the contour pixels of a correlation map).  The Numba first-call
compile time is measured separately, in fresh processes with an empty cache dir
(cold) and with the filled cache (warm).

    .venv/bin/python benchmarks/bench_edt.py [--repeats 5] [--quick]

Writes ``benchmarks/results/edt.json`` and ``edt.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage as ndi
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"


def make_masks(kind: str, n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """(n, *shape) bool masks; ``blobs``: smooth shapes, ``sparse``: 0.2 % zeros."""
    rng = np.random.default_rng(seed)
    if kind == "sparse":
        return rng.random((n, *shape)) >= 0.002
    return np.stack([ndi.gaussian_filter(rng.random(shape), 6) > 0.5 for _ in range(n)])


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of every function, run in turn ``repeats`` times (after one warm-up each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(ts)) for name, ts in times.items()}


def on_one_thread(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with Numba limited to one thread (per-core efficiency, immune to busy cores)."""
    import numba

    def run() -> object:
        n = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return fn()
        finally:
            numba.set_num_threads(n)

    return run


def compile_times() -> dict[str, float]:
    """First-call seconds in a fresh process: empty Numba cache (cold) and filled cache (warm)."""
    code = (
        "import time, numpy as np; t=time.perf_counter();"
        "from fastmed.kernels import distance_transform_edt as f, distance_transform_edt_batch as g;"
        "m=np.ones((2,8,9)); m[:,3,4]=0; f(m[0]); f(m[0],return_indices=True); g(m); g(m,return_indices=True);"
        "f(m); f(m,return_indices=True); print(time.perf_counter()-t)"
    )
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        for label in ("cold_cache_s", "warm_cache_s"):
            res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            out[label] = float(res.stdout.strip().splitlines()[-1])
    return out


def machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(),
        "versions": {p: metadata.version(p) for p in ("numpy", "scipy", "numba", "edt")},
        "note": machine_note() + "; medians of interleaved repeats",
    }


def run(repeats: int, quick: bool) -> dict[str, object]:
    import edt

    from fastmed.kernels import distance_transform_edt, distance_transform_edt_batch

    n_img, side = (8, 256) if quick else (32, 512)
    cores = os.cpu_count() or 1
    rows = []
    for kind in ("blobs", "sparse"):
        masks = make_masks(kind, n_img, (side, side), seed=0)
        t = interleaved_medians(
            {
                "scipy_loop": lambda: [ndi.distance_transform_edt(m, return_indices=True) for m in masks],
                "fastmed_batch": lambda: distance_transform_edt_batch(masks, return_indices=True),
                "fastmed_batch_1thread": on_one_thread(lambda: distance_transform_edt_batch(masks, return_indices=True)),
            },
            repeats,
        )
        rows.append({"case": f"batch2d_indices/{kind}", "shape": [n_img, side, side], **t,
                     "speedup_vs_scipy": t["scipy_loop"] / t["fastmed_batch"],
                     "speedup_1thread_vs_scipy": t["scipy_loop"] / t["fastmed_batch_1thread"]})
        t = interleaved_medians(
            {
                "scipy_loop": lambda: [ndi.distance_transform_edt(m) for m in masks],
                "edt_loop": lambda: [edt.edt(m) for m in masks],
                f"edt_loop_parallel{cores}": lambda: [edt.edt(m, parallel=cores) for m in masks],
                "fastmed_loop": lambda: [distance_transform_edt(m) for m in masks],
                "fastmed_batch": lambda: distance_transform_edt_batch(masks),
            },
            repeats,
        )
        rows.append({"case": f"batch2d_distances/{kind}", "shape": [n_img, side, side], **t,
                     "speedup_vs_scipy": t["scipy_loop"] / t["fastmed_batch"],
                     "speedup_vs_edt": t["edt_loop"] / t["fastmed_batch"],
                     f"speedup_vs_edt_parallel{cores}": t[f"edt_loop_parallel{cores}"] / t["fastmed_batch"]})
    vol_shape = (48, 96, 96) if quick else (96, 192, 192)
    sampling = (2.5, 0.7, 0.7)
    vol = make_masks("blobs", 1, vol_shape, seed=1)[0]
    t = interleaved_medians(
        {
            "scipy": lambda: ndi.distance_transform_edt(vol, sampling=sampling, return_indices=True),
            "fastmed": lambda: distance_transform_edt(vol, sampling=sampling, return_indices=True),
        },
        repeats,
    )
    rows.append({"case": "volume3d_aniso_indices", "shape": list(vol_shape), "sampling": sampling, **t,
                 "speedup_vs_scipy": t["scipy"] / t["fastmed"]})
    t = interleaved_medians(
        {
            "scipy": lambda: ndi.distance_transform_edt(vol, sampling=sampling),
            "edt": lambda: edt.edt(vol, anisotropy=sampling),
            f"edt_parallel{cores}": lambda: edt.edt(vol, anisotropy=sampling, parallel=cores),
            "fastmed": lambda: distance_transform_edt(vol, sampling=sampling),
        },
        repeats,
    )
    rows.append({"case": "volume3d_aniso_distances", "shape": list(vol_shape), "sampling": sampling, **t,
                 "speedup_vs_scipy": t["scipy"] / t["fastmed"], "speedup_vs_edt": t["edt"] / t["fastmed"],
                 f"speedup_vs_edt_parallel{cores}": t[f"edt_parallel{cores}"] / t["fastmed"]})
    return {"machine": machine(), "repeats": repeats, "compile": compile_times(), "cases": rows}


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        "# EDT benchmark (fastmed Numba vs SciPy vs edt)",
        "",
        f"{m['cpu']}, numba threads {m['numba_threads']}; {m['note']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        f"Median of {res['repeats']} interleaved repeats, seconds per call of the whole case; "
        "speedup = anchor / fastmed (same process).",
        "",
        "| case | shape | timings (s) | speedups |",
        "|---|---|---|---|",
    ]
    for row in res["cases"]:
        times = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float) and not k.startswith("speedup"))
        speed = ", ".join(f"{k.removeprefix('speedup_')} **{v:.2f}x**" for k, v in row.items() if k.startswith("speedup"))
        lines.append(f"| {row['case']} | {'x'.join(map(str, row['shape']))} | {times} | {speed} |")
    c = res["compile"]
    lines += ["", f"Numba first call in a fresh process: {c['cold_cache_s']:.1f} s with an empty cache "
              f"(compilation), {c['warm_cache_s']:.1f} s with the on-disk cache (import + load).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke run)")
    args = parser.parse_args()
    res = run(args.repeats, args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "edt_quick" if args.quick else "edt"
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"{name}.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
