"""Export evidence: the bench table and streaming fps for the student and the recognizer.

For each checkpoint (the distilled MobileNetV3-small student and the ResNet-18
polyp recognizer, trained on fastmed's synthetic polyp data):

* ``fastmed.export.bench`` rows PyTorch eager / ONNX Runtime fp32 / ONNX Runtime
  int8 (TensorRT rows are skipped: no TensorRT or GPU here) — file size,
  parity with PyTorch, accuracy on ``polyp/test``, latency p50/p95/p99 at batch
  1 and throughput at batch 32, every backend with the same thread count
  (``--threads``, default 1: on an oversubscribed shared CPU, multi-threaded
  PyTorch eager timings are dominated by OpenMP threads waiting for each other);
* streaming: a video of ``--frames`` frames of 256x256 (test images upscaled,
  H.264) through ``stream_predict`` (decode → preprocess → inference, bounded
  queues) per backend: sustained fps, compute-only and end-to-end percentiles.

Targets from the issue: ORT fp32 p50 >= 1.5x faster than PyTorch eager at
batch 1; int8 file <= 0.4x fp32 with <= 1 point of accuracy lost.

    .venv/bin/python benchmarks/bench_export.py --model student=S.pt --model recognizer=R.pt --data DATA/polyp

Writes ``benchmarks/results/export.json`` and ``export.md`` (and the exported
files under ``--work``).

``--native build/native/fastmed-run`` (``make native``) measures the native
path instead: batch-1 latency per image of the Python ``Predictor`` over
ONNX Runtime fp32 and over the AOTInductor ``.pt2``, and of the C++ runner on
the same ``.pt2``, on the same ``test`` files and thread count, compute alone
and decode + preprocess + compute; writes ``export_native.json`` / ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)

RESULTS = Path(__file__).resolve().parent / "results"


def make_video(path: Path, folder: Path, frames: int, side: int = 256) -> Path:
    from PIL import Image

    from fastmed.data.images import list_images
    from fastmed.export.preprocess import read_images
    from fastmed.export.video import VideoWriter

    images, _ = read_images(list_images(folder))
    writer = VideoWriter(path, fps=30)
    for i in range(frames):
        writer.write(np.asarray(Image.fromarray(images[i % len(images)]).resize((side, side), Image.BILINEAR)))
    writer.close()
    return path


def stream_rows(artifacts: dict[str, str], video: Path, threads: int) -> list[dict]:
    from fastmed.export import Predictor
    from fastmed.export.stream import stream_predict

    rows = []
    for name, path in artifacts.items():
        rep = stream_predict(Predictor(path, device="cpu", threads=threads), video, queue_size=8, warmup=5)
        print(f"[stream] {name}: {rep.summary()}", flush=True)
        rows.append({"backend": name, "frames": rep.frames, "bad_frames": rep.bad_frames, "fps": rep.fps,
                     "compute_fps": rep.compute_fps, "compute_ms": rep.compute_ms, "end_to_end_ms": rep.end_to_end_ms,
                     "latency_ms": rep.latency_ms, "stage_median_ms": rep.stage_median_ms})
    return rows


def stream_table(rows: list[dict]) -> str:
    lines = ["| backend | frames | fps sustained | fps compute-only | compute p50/p95/p99/p99.9 ms | end-to-end p50/p95/p99/p99.9 ms | decode / preprocess / compute median ms |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        c, e, s = r["compute_ms"], r["end_to_end_ms"], r["stage_median_ms"]
        lines.append(f"| {r['backend']} | {r['frames']} | {r['fps']:.1f} | {r['compute_fps']:.1f} | "
                     f"{c['p50']:.2f} / {c['p95']:.2f} / {c['p99']:.2f} / {c['p99.9']:.2f} | "
                     f"{e['p50']:.2f} / {e['p95']:.2f} / {e['p99']:.2f} / {e['p99.9']:.2f} | "
                     f"{s['decode']:.2f} / {s['preprocess']:.2f} / {s['compute']:.2f} |")
    return "\n".join(lines)


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}


def native_rows(weights: str, work: Path, images: list[Path], runner: Path, threads: int, iters: int,
                exporter: str) -> list[dict]:
    """Per-image batch-1 latency (ms) of Predictor over ORT / .pt2 and of fastmed-run, over ``iters`` images."""
    import torch

    from fastmed.export import Predictor, export
    from fastmed.export.native_runner import run_native
    from fastmed.export.preprocess import to_rgb_uint8

    torch.set_num_threads(threads)  # also the thread count the .pt2 is compiled for
    work.mkdir(parents=True, exist_ok=True)
    onnx = export(weights, "onnx", work / "model.onnx", exporter=exporter).path
    pt2 = export(weights, "aoti", work / "model.pt2", device="cpu").path
    rows = []
    for name, path in [("Python Predictor, ONNX Runtime fp32", onnx), ("Python Predictor, .pt2 (AOTInductor)", pt2)]:
        pred = Predictor(path, device="cpu", threads=threads)
        compute, total = [], []
        for k in range(10 + iters):  # 10 warm-up images
            t0 = time.perf_counter()
            batch = pred.preprocess([to_rgb_uint8(images[k % len(images)], pred.meta.input_size)])
            t1 = time.perf_counter()
            pred.infer(batch)
            t2 = time.perf_counter()
            if k >= 10:
                compute.append(1e3 * (t2 - t1))
                total.append(1e3 * (t2 - t0))
        rows.append({"backend": name, "compute_ms": _percentiles(compute), "end_to_end_ms": _percentiles(total)})
        print(f"[native] {rows[-1]}", flush=True)
    repeat = -(-iters // len(images))
    run = run_native(runner, pt2, images, work / "native.csv", batch=1, warmup=10, repeat=repeat, threads=threads)
    if run.returncode != 0:
        raise SystemExit(f"fastmed-run failed:\n{run.stderr}")
    rows.append({"backend": "C++ fastmed-run, .pt2 (AOTInductor)", "compute_ms": run.latency_ms["compute"],
                 "end_to_end_ms": run.latency_ms["decode+preprocess+compute"]})
    print(f"[native] {rows[-1]}", flush=True)
    return rows


def native_table(rows: list[dict]) -> str:
    lines = ["| backend | compute p50 / p95 / p99 ms | decode+preprocess+compute p50 / p95 / p99 ms |", "|---|---|---|"]
    for r in rows:
        c, e = r["compute_ms"], r["end_to_end_ms"]
        lines.append(f"| {r['backend']} | {c['p50']:.3f} / {c['p95']:.3f} / {c['p99']:.3f} | "
                     f"{e['p50']:.3f} / {e['p95']:.3f} / {e['p99']:.3f} |")
    return "\n".join(lines)


def native_main(args, models: dict[str, str]) -> None:
    from fastmed.data.images import list_images

    images = list_images(Path(args.data) / "test")
    report = {"machine": machine_note(), "threads": args.threads, "images": f"{len(images)} files of {Path(args.data) / 'test'}",
              "iters": args.iters, "models": {}}
    md = ["# fastmed export: Python Predictor (ONNX Runtime, .pt2) vs the C++ runner (CPU, batch 1)", "",
          f"Measured on {report['machine']}; {args.threads} thread(s) everywhere (the .pt2 is compiled for them); "
          f"{args.iters} timed images after 10 warm-up ones, cycling over {report['images']}.",
          "Command: `.venv/bin/python benchmarks/bench_export.py " + " ".join(sys.argv[1:]) + "`", ""]
    for role, weights in models.items():
        rows = native_rows(weights, Path(args.work) / f"native_{role}", images, Path(args.native), args.threads,
                           args.iters, args.exporter)
        report["models"][role] = rows
        md += [f"## {role} (`{weights}`)", "", native_table(rows), ""]
    report["load_average_at_end"] = list(os.getloadavg())
    md.append("Load average at the end: {:.1f}/{:.1f}/{:.1f} (1/5/15 min).".format(*report["load_average_at_end"]))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export_native.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "export_native.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def main() -> None:
    from fastmed.export.bench import bench, format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, metavar="ROLE=PATH",
                    help="a checkpoint to bench, e.g. student=S.pt recognizer=R.pt (repeatable)")
    ap.add_argument("--data", required=True, help="synthetic polyp root (train/ test/)")
    ap.add_argument("--work", default="runs/bench_export")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--exporter", default="dynamo")
    ap.add_argument("--threads", type=int, default=1,
                    help="CPU threads for every backend (1: robust on a shared, oversubscribed machine)")
    ap.add_argument("--native", metavar="FASTMED_RUN", help="only the native comparison, with this built fastmed-run")
    args = ap.parse_args()
    if args.native:
        return native_main(args, dict(m.split("=", 1) for m in args.model))
    data, work = Path(args.data), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    video = make_video(work / "clip.mp4", data / "test", args.frames)
    t0 = time.perf_counter()
    report = {"models": {}, "stream_video": f"{args.frames} frames 256x256 H.264 from {data / 'test'}"}
    md = ["# fastmed export: bench table and streaming (CPU)", "",
          f"Measured on {machine_note()}; {args.threads} thread(s) per backend; ratios are within one process.",
          "Command: `.venv/bin/python benchmarks/bench_export.py " + " ".join(f"--model {m}" for m in args.model)
          + f" --data {args.data}`", ""]
    models = dict(m.split("=", 1) for m in args.model)
    for role, weights in models.items():
        res = bench(weights, work / role, data=str(data / "test"), calib=str(data / "train"), batch=32,
                    warmup=10, iters=args.iters, exporter=args.exporter, threads=args.threads)
        rows = {r.format: r for r in res.rows}
        arts = {"PyTorch eager": weights, "ONNX Runtime fp32": rows["onnx"].file, "ONNX Runtime int8": rows["onnx-int8"].file}
        streams = stream_rows({k: v for k, v in arts.items() if v}, video, args.threads)
        checks = {
            "ort_fp32_speedup_b1": rows["pytorch"].p50_ms / rows["onnx"].p50_ms if rows["onnx"].p50_ms else None,
            "int8_size_ratio": rows["onnx-int8"].size_mb / rows["onnx"].size_mb if rows["onnx-int8"].size_mb else None,
            "int8_accuracy_change_points": 100 * (rows["onnx-int8"].accuracy - rows["onnx"].accuracy)
            if rows["onnx-int8"].accuracy is not None else None,
        }
        report["models"][role] = {"bench": res.as_dict(), "stream": streams, "checks": checks}
        md += [f"## {role} (`{weights}`)", "", format_table(res), "", "Streaming (batch 1, bounded queues of 8):", "",
               stream_table(streams), "",
               f"Targets: ORT fp32 speed-up {_num(checks['ort_fp32_speedup_b1'], '.2f')}x (target >= 1.5x); int8 size "
               f"{_num(checks['int8_size_ratio'], '.2f')}x fp32 (target <= 0.4x); int8 accuracy change "
               f"{_num(checks['int8_accuracy_change_points'], '+.2f')} points (target >= -1)"
               + ("" if rows["onnx-int8"].file else f"; int8 not shipped: {rows['onnx-int8'].note}") + ".", ""]
    report["seconds"] = time.perf_counter() - t0
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (RESULTS / "export.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


def _num(value: float | None, spec: str) -> str:
    """``value`` formatted, or "—" when the row was not measured (an int8 export that failed its gate)."""
    return "—" if value is None else format(value, spec)


if __name__ == "__main__":
    main()
