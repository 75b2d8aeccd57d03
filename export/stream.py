"""Cart-style streaming inference: decode → preprocess → inference with bounded queues.

Three stages run concurrently (two worker threads and the caller's thread;
a fourth encodes the annotated video when asked), joined by queues of
``queue_size`` frames, so a slow stage applies back-pressure
instead of buffering the whole video. Per frame we record:

* **compute**: the inference call alone (batch 1), as a runtime benchmark reports it;
* **end to end**: decode + preprocess + inference of that frame (the work a
  frame costs, without time spent waiting in queues);
* **latency**: from the start of the frame's decode to its result, queue
  waits included (what a viewer of a live feed sees).

Frames per second: sustained (frames / wall time of the whole pipeline) and
compute-only (1 / median compute). A frame that fails to decode is counted
and skipped. As Holoscan's and MONAI's endoscopy benchmarks show, the
end-to-end numbers can be dominated by decode and preprocessing.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastmed.export.video import VideoWriter, annotate, open_frames

_END = object()
PERCENTILES = (50, 95, 99, 99.9)


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """``{"p50": ms, "p95": ..., "p99": ..., "p99.9": ...}`` of a list of durations in seconds."""
    if not seconds:
        return {f"p{q:g}": float("nan") for q in PERCENTILES}
    arr = np.asarray(seconds) * 1e3
    return {f"p{q:g}": float(np.percentile(arr, q)) for q in PERCENTILES}


@dataclass
class StreamReport:
    """Timing and results of one streamed source."""

    source: str
    frames: int
    bad_frames: int
    wall_s: float
    fps: float                       # sustained, end to end
    compute_fps: float               # 1 / median compute time
    compute_ms: dict[str, float]
    end_to_end_ms: dict[str, float]
    latency_ms: dict[str, float]
    stage_median_ms: dict[str, float]  # decode, preprocess, compute
    predictions: list[dict[str, Any]] = field(default_factory=list)  # {"frame", "class", "prob"}
    bad: list[dict[str, Any]] = field(default_factory=list)          # {"frame", "error"}
    annotated: str | None = None

    def summary(self) -> str:
        c, e, l = self.compute_ms, self.end_to_end_ms, self.latency_ms
        return (f"{self.frames} frames ({self.bad_frames} bad, skipped) in {self.wall_s:.2f} s: "
                f"{self.fps:.1f} fps sustained, {self.compute_fps:.1f} fps compute-only\n"
                f"  compute    ms p50 {c['p50']:.2f}  p95 {c['p95']:.2f}  p99 {c['p99']:.2f}  p99.9 {c['p99.9']:.2f}\n"
                f"  end-to-end ms p50 {e['p50']:.2f}  p95 {e['p95']:.2f}  p99 {e['p99']:.2f}  p99.9 {e['p99.9']:.2f}"
                f"  (decode {self.stage_median_ms['decode']:.2f} + preprocess {self.stage_median_ms['preprocess']:.2f}"
                f" + compute {self.stage_median_ms['compute']:.2f}, medians)\n"
                f"  latency    ms p50 {l['p50']:.2f}  p99 {l['p99']:.2f}  (queue waits included)")


def _worker(fn, inbox, outbox, errors):
    """Run ``fn(item) -> item`` over ``inbox`` until ``_END``; forward results and the end mark.

    After a failure the rest of ``inbox`` is drained (so producers never block) and the
    error is left in ``errors`` for the caller's thread to raise.
    """
    failed = False
    try:
        while (item := inbox.get()) is not _END:
            if failed:
                continue
            try:
                outbox.put(fn(item))
            except BaseException as exc:
                errors.append(exc)
                failed = True
    finally:
        outbox.put(_END)


def stream_predict(
    predictor,
    source: str | os.PathLike,
    *,
    queue_size: int = 8,
    max_frames: int | None = None,
    annotate_to: str | os.PathLike | None = None,
    fps_out: float = 25.0,
    warmup: int = 3,
) -> StreamReport:
    """Stream a video file or an image-sequence folder through ``predictor`` (batch 1).

    ``warmup`` frames run before timing starts (their results are kept).
    ``annotate_to`` writes each good frame with its top class to a video.
    """
    if queue_size < 1:
        raise ValueError(f"queue_size must be >= 1, got {queue_size}")
    frames = open_frames(source)
    decoded: queue.Queue = queue.Queue(queue_size)
    prepared: queue.Queue = queue.Queue(queue_size)
    errors: list[BaseException] = []

    def decode_loop():
        try:
            for n, (index, frame) in enumerate(_timed(frames)):
                if max_frames is not None and n >= max_frames:
                    break
                decoded.put((index, frame))
        except BaseException as exc:
            errors.append(exc)
        finally:
            decoded.put(_END)

    def prepare(item):
        (index, (frame, t0, t1)) = item
        if isinstance(frame, Exception):
            return index, frame, None, t0, t1 - t0, 0.0
        start = time.perf_counter()
        x = predictor.preprocess([frame])
        return index, frame, x, t0, t1 - t0, time.perf_counter() - start

    if warmup:
        dummy = np.zeros((*predictor.meta.input_size, 3), np.uint8)
        for _ in range(warmup):
            predictor.infer(predictor.preprocess([dummy]))
    threads = [threading.Thread(target=decode_loop, daemon=True),
               threading.Thread(target=_worker, args=(prepare, decoded, prepared, errors), daemon=True)]
    writer = VideoWriter(annotate_to, fps_out) if annotate_to else None
    to_write: queue.Queue = queue.Queue(queue_size)
    if writer:  # the fourth stage: encoding never blocks inference
        threads.append(threading.Thread(target=_worker, args=(lambda a: writer.write(annotate(*a)), to_write,
                                                              queue.Queue(), errors), daemon=True))
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    compute, e2e, latency, dec, pre = [], [], [], [], []
    preds, bad = [], []
    try:
        while (item := prepared.get()) is not _END:
            index, frame, x, t0, decode_s, prep_s = item
            if x is None:
                bad.append({"frame": index, "error": str(frame)})
                continue
            t3 = time.perf_counter()
            probs = predictor.infer(x)[0]
            t4 = time.perf_counter()
            compute.append(t4 - t3)
            dec.append(decode_s)
            pre.append(prep_s)
            e2e.append(decode_s + prep_s + (t4 - t3))
            latency.append(t4 - t0)
            k = int(probs.argmax())
            preds.append({"frame": index, "class": predictor.class_names[k], "prob": float(probs[k])})
            if writer:
                to_write.put((frame, predictor.class_names[k], float(probs[k])))
    finally:
        to_write.put(_END)
        for t in threads:
            t.join(timeout=30)
        wall = time.perf_counter() - t_start
        if writer:
            writer.close()
    if errors:
        raise errors[0]
    med = lambda xs: float(np.median(xs) * 1e3) if xs else float("nan")  # noqa: E731
    return StreamReport(
        source=str(source), frames=len(compute), bad_frames=len(bad), wall_s=wall,
        fps=len(compute) / wall if wall > 0 else float("nan"),
        compute_fps=1e3 / med(compute) if compute else float("nan"),
        compute_ms=percentiles_ms(compute), end_to_end_ms=percentiles_ms(e2e), latency_ms=percentiles_ms(latency),
        stage_median_ms={"decode": med(dec), "preprocess": med(pre), "compute": med(compute)},
        predictions=preds, bad=bad, annotated=str(Path(annotate_to)) if annotate_to else None,
    )


def _timed(frames):
    """``(index, (frame, t_decode_start, t_decode_end))`` around each ``next()`` of ``frames``."""
    while True:
        t0 = time.perf_counter()
        try:
            index, frame = next(frames)
        except StopIteration:
            return
        yield index, (frame, t0, time.perf_counter())
