"""``fastmed bench``: every backend of one checkpoint in one table (Ultralytics-style).

Rows: PyTorch eager (the reference), ONNX Runtime fp32, ONNX Runtime int8
(QDQ), TensorRT fp16 / int8 (only where TensorRT and a CUDA GPU are present;
otherwise the row says why it was skipped). Per row: status (exported and
validated / exported but validation failed / export failed / skipped), file
size, parity with PyTorch (max |Δprob|, top-1 agreement), accuracy on a
labelled folder when given, latency p50/p95/p99 at batch 1 and throughput at
a larger batch (warm-up, then medians over rounds that interleave the
backends), and the runtime versions. All backends use the same number of CPU
threads.
"""
from __future__ import annotations

import os
import platform
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastmed.errors import FastmedError

VALIDATED = "exported, validated"
VALIDATION_FAILED = "exported, validation failed"
EXPORT_FAILED = "export failed"


@dataclass
class BenchRow:
    name: str                      # e.g. "ONNX Runtime int8"
    format: str                    # pytorch | onnx | onnx-int8 | tensorrt-fp16 | tensorrt-int8
    status: str
    file: str = ""
    size_mb: float | None = None
    max_abs_prob_diff: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    throughput_batch: int | None = None
    export_s: float | None = None
    note: str = ""


@dataclass
class BenchResult:
    weights: str
    rows: list[BenchRow]
    versions: dict[str, str]
    settings: dict[str, Any]
    data: str | None = None
    min_metric: float | None = None
    failures: list[str] = field(default_factory=list)  # rows below --min-metric

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def runtime_versions() -> dict[str, str]:
    """Versions of Python, the runtimes and the machine the bench ran on."""
    import onnx
    import onnxruntime
    import torch

    from fastmed._version import __version__

    v = {"fastmed": __version__, "python": platform.python_version(), "torch": torch.__version__,
         "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
         "machine": f"{platform.machine()} {_cpu_name()}, {os.cpu_count()} logical CPUs",
         "torch_threads": str(torch.get_num_threads())}
    try:
        import tensorrt

        v["tensorrt"] = tensorrt.__version__
    except ImportError:
        v["tensorrt"] = "not installed"
    return v


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _check(row: BenchRow, predictor, images: list[np.ndarray], ref_probs: np.ndarray, data: str | None) -> None:
    """Fill parity with PyTorch and accuracy of ``row`` from ``predictor``."""
    from fastmed.export.evaluate import compare_probs, quality

    parity = compare_probs(ref_probs, predictor.predict(images))
    row.max_abs_prob_diff, row.top1_agreement = parity.max_abs_prob_diff, parity.top1_agreement
    if data:
        row.accuracy = quality(predictor, data)


def bench(
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    data: str | None = None,
    calib: str | None = None,
    formats: tuple[str, ...] = ("pytorch", "onnx", "onnx-int8", "tensorrt-fp16", "tensorrt-int8"),
    batch: int = 32,
    warmup: int = 5,
    iters: int = 50,
    parity_tol: float = 1e-4,
    max_drop: float = 1.0,
    min_agreement: float = 0.99,
    min_metric: float | None = None,
    exporter: str = "dynamo",
    threads: int = 0,
    seed: int = 0,
    reference: str | None = None,
) -> BenchResult:
    """Export ``weights`` to each format under ``out_dir``, validate, time, and tabulate.

    Validation: fp32/fp16 rows pass when max |Δprob| vs PyTorch ≤ ``parity_tol``
    (fp16: 1e-2); int8 rows must pass the int8 gate (accuracy change, or
    without ``data`` top-1 disagreement, within ``max_drop`` points and top-1
    agreement with fp32 >= ``min_agreement``; else the export fails and the row says why).
    ``threads``: CPU threads for every backend (0 = PyTorch's current setting).
    ``weights`` that is not a ``.pt`` (an exported ``.onnx``, ``.ort``, ``.pt2``,
    ``.engine``) is benched alone, see :mod:`fastmed.export.bench_artifact`;
    ``reference`` (a ``.pt``) then adds parity and agreement.
    """
    import torch

    from fastmed.export.exporter import _load_source

    if min_metric is not None and not data:
        raise FastmedError("--min-metric gates on accuracy: give a labelled folder with --data")
    out_dir = Path(out_dir)
    weights = Path(weights)
    bare = weights.suffix.lower() not in (".pt", ".pth")
    if reference and not bare:
        raise FastmedError(f"--reference is for benching an exported file alone; {weights} is its own reference")
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if bare:
            from fastmed.export.bench_artifact import bench_artifact

            result = bench_artifact(weights, reference=reference, data=data, batch=batch, warmup=warmup, iters=iters,
                                    min_agreement=min_agreement, threads=torch.get_num_threads(), seed=seed)
            _apply_floor(result, min_metric)
            return result
        src = _load_source(weights, data, calib, n_check=32, seed=seed)
        return _bench_rows(weights, out_dir, src, data, calib, formats, batch, warmup, iters, parity_tol, max_drop,
                           min_agreement, min_metric, exporter, seed)
    finally:
        torch.set_num_threads(previous_threads)


def _bench_rows(weights: Path, out_dir: Path, src, data, calib, formats, batch, warmup, iters, parity_tol, max_drop,
                min_agreement, min_metric, exporter, seed) -> BenchResult:
    """The body of :func:`bench`, run with the thread count set."""
    import torch

    from fastmed.export.exporter import export, torch_probs
    from fastmed.export.predictor import Predictor

    threads = torch.get_num_threads()
    images = src.check_images
    ref_probs = torch_probs(src.model, src.meta, images)
    rows: list[BenchRow] = []
    timed: dict[str, tuple[BenchRow, object]] = {}  # rows whose backend runs: timed together below
    for fmt in formats:
        row = BenchRow(name=_NAMES[fmt], format=fmt, status=VALIDATED)
        int8 = None
        try:
            if fmt == "pytorch":
                row.file, row.size_mb = str(weights), weights.stat().st_size / 1e6
                pred = Predictor(weights, device="cpu")
            else:
                export_fmt, precision = ("tensorrt", fmt.split("-")[1]) if fmt.startswith("tensorrt") else (fmt, "fp16")
                needs_calib = fmt in ("onnx-int8", "tensorrt-int8")
                if needs_calib and not calib:
                    row.status, row.note = "skipped", "no --calib folder for int8 calibration"
                    rows.append(row)
                    continue
                if export_fmt == "tensorrt":
                    try:
                        from fastmed.export.tensorrt_build import require_tensorrt

                        require_tensorrt()
                    except FastmedError as exc:
                        row.status, row.note = "skipped", str(exc).split(" (")[0]
                        rows.append(row)
                        continue
                target = out_dir / f"{weights.stem}{_SUFFIX[fmt]}"
                fp32_onnx = next((Path(r.file) for r in rows if r.format == "onnx" and r.file), None)
                try:
                    res = export(weights, export_fmt, target, calib=calib, data=data, precision=precision,
                                 exporter=exporter, max_drop=max_drop, min_agreement=min_agreement,
                                 parity_tol=float("inf"), seed=seed,
                                 from_onnx=fp32_onnx if needs_calib else None)
                except Exception as exc:  # any failure of an export is a row status, not a crash
                    row.status, row.note = EXPORT_FAILED, f"{type(exc).__name__}: {exc}"[:600]
                    rows.append(row)
                    continue
                row.file, row.size_mb, row.export_s = str(res.path), res.size_bytes / 1e6, res.seconds
                pred = Predictor(res.path, device="cpu" if export_fmt != "tensorrt" else "cuda", threads=threads)
                int8 = res.int8
                if int8 is not None:
                    row.note = (f"{int8.chosen.plan}; drop {int8.chosen.drop_points:+.2f} points, top-1 agreement "
                                f"{int8.chosen.agreement:.3f} with fp32 (gate >= {int8.min_agreement:g}; {int8.measure})")
            _check(row, pred, images, ref_probs, data)
            _validate(row, parity_tol, int8)
            timed[row.name] = (row, pred)
        except Exception as exc:  # a broken runtime must not lose the other rows
            row.status, row.note = VALIDATION_FAILED, f"{type(exc).__name__}: {exc}"[:300]
            traceback.print_exc()
        rows.append(row)
        print(f"[bench] {row.name}: {row.status}" + (f" — {row.note}" if row.note else ""), flush=True)
    _time_rows(timed, images, batch, warmup, iters)
    result = BenchResult(str(weights), rows, runtime_versions(),
                         {"batch": batch, "warmup": warmup, "iters": iters, "threads": threads,
                          "parity_tol": parity_tol, "max_drop": max_drop, "min_agreement": min_agreement,
                          "exporter": exporter,
                          "parity_images": src.check_from}, data)
    _apply_floor(result, min_metric)
    return result


def _apply_floor(result: BenchResult, min_metric: float | None) -> None:
    """Record ``--min-metric`` and list the rows below it (or failed) in ``result.failures``."""
    result.min_metric = min_metric
    if min_metric is None:
        return
    rows = result.rows
    result.failures = [f"{r.name}: accuracy {r.accuracy:.4f} < {min_metric}" for r in rows
                       if r.accuracy is not None and r.accuracy < min_metric]
    result.failures += [f"{r.name}: {r.status}" for r in rows if r.status in (EXPORT_FAILED, VALIDATION_FAILED)]
    if not any(r.accuracy is not None for r in rows):  # a floor that nothing was held to is not passed
        result.failures.append(f"no row measured an accuracy on {result.data} (rows: "
                               + ", ".join(f"{r.name} {r.status}" for r in rows) + ")")


def _time_rows(timed: dict[str, tuple[BenchRow, object]], images: list[np.ndarray], batch: int, warmup: int,
               iters: int) -> None:
    """Latency and throughput of every runnable row, in interleaved rounds (see ``timing``)."""
    from fastmed.export.timing import interleaved_timings

    big = [images[i % len(images)] for i in range(batch)]
    cases = {name: (pred.backend.run, pred.preprocess(images[:1]), pred.preprocess(big)) for name, (_, pred) in timed.items()}
    for name, stats in interleaved_timings(cases, warmup, iters).items():
        timed[name][0].__dict__.update(stats)


def _validate(row: BenchRow, parity_tol: float, int8) -> None:
    """Set the row's status from its parity (fp32/fp16) or its int8 accuracy bound."""
    if int8 is not None:
        if not int8.chosen.within_bound:
            row.status = VALIDATION_FAILED
        return
    tol = 1e-2 if row.format == "tensorrt-fp16" else parity_tol
    if row.max_abs_prob_diff is not None and not row.max_abs_prob_diff <= tol:
        row.status = VALIDATION_FAILED
        row.note = (row.note + "; " if row.note else "") + f"max |Δprob| > {tol:g}"


_NAMES = {"pytorch": "PyTorch eager", "onnx": "ONNX Runtime fp32", "onnx-int8": "ONNX Runtime int8",
          "tensorrt-fp16": "TensorRT fp16", "tensorrt-int8": "TensorRT int8"}
_SUFFIX = {"onnx": ".onnx", "onnx-int8": ".int8.onnx", "tensorrt-fp16": ".fp16.engine", "tensorrt-int8": ".int8.engine"}


def _f(v: float | None, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)


def format_table(result: BenchResult) -> str:
    """The bench result as a markdown table (plus settings and versions)."""
    ref = next((r for r in result.rows if r.format == "pytorch" and r.p50_ms), None)
    lines = [f"| backend | status | size (MB) | max abs Δprob | top-1 agree | accuracy / Dice | p50 ms | p95 ms | p99 ms "
             f"| img/s @ batch {result.settings['batch']} | speed-up p50 vs PyTorch |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result.rows:
        speed = _f(ref.p50_ms / r.p50_ms, ".2f") + "x" if ref and r.p50_ms else "—"
        lines.append(f"| {r.name} | {r.status} | {_f(r.size_mb, '.2f')} | {_f(r.max_abs_prob_diff, '.1e')} "
                     f"| {_f(r.top1_agreement, '.3f')} | {_f(r.accuracy, '.4f')} | {_f(r.p50_ms, '.2f')} "
                     f"| {_f(r.p95_ms, '.2f')} | {_f(r.p99_ms, '.2f')} | {_f(r.throughput_ips, '.0f')} | {speed} |")
    notes = [f"- {r.name}: {r.note}" for r in result.rows if r.note]
    s = result.settings
    against = f"parity vs `{s['reference']}`" if s.get("reference") else "parity"
    lines += ["", f"Weights `{result.weights}`; accuracy on `{result.data or '(no --data)'}`; {against} on {s['parity_images']}; "
              f"latency at batch 1 over {s['iters']} runs after {s['warmup']} warm-up runs, {s['threads']} threads each.",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in result.versions.items())]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines)
