"""Demo stage ``distill``: a MobileNetV3-small student from the polyp recognizer (the model the export stage ships)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import torch

from fastmed.cfg.distill import DistillTrainConfig
from fastmed.demo import DemoContext, DemoSection
from fastmed.distill.size import cpu_latency_ms, model_size
from fastmed.distill.train import run_train
from fastmed.engine.checkpoint import load_model
from fastmed.engine.classify import evaluate_class_folder
from fastmed.engine.device import select_device

STUDENT_EPOCHS = 12
STUDENT_SIZE = 32  # the student's input side; the teacher keeps its own (64 in the demo)
BATCH_SIZE = 32  # ~7 steps per epoch on the demo's 240 training images
TEACHER_EPOCHS = 4  # only when no recognizer was left by the polyp stage


@contextlib.contextmanager
def _one_cpu_thread() -> Iterator[None]:
    """One intra-op thread while the stage runs (restored after).

    Measured on the shared 2-core machine at load ~7-12: the student's epoch
    took 7-50 s with two threads and ~2.5 s with one (the two threads wait on
    each other when the cores are busy). Not measured on an idle machine.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _teacher(ctx: DemoContext, data: Path, out: Path) -> tuple[str, str]:
    """The polyp stage's recognizer, or a small ResNet-18 trained here on labels."""
    recognizer = ctx.artifacts.get("recognizer")
    if recognizer and Path(recognizer).is_file():
        return str(recognizer), "the polyp stage's recognizer"
    summary = run_train(DistillTrainConfig(data=str(data), arch="resnet18", kd_weight=0.0, mi_weight=0.0,
                                           epochs=TEACHER_EPOCHS, batch_size=BATCH_SIZE, lr=2e-3,
                                           out=str(out / "teacher"), seed=ctx.seed, device=ctx.device,
                                           progress=ctx.progress))
    return str(summary.last_weights), f"a ResNet-18 trained here for {TEACHER_EPOCHS} epochs (no recognizer artifact)"


def run(ctx: DemoContext) -> DemoSection:
    with _one_cpu_thread():
        return _run(ctx)


def _run(ctx: DemoContext) -> DemoSection:
    out = ctx.stage_dir("distill")
    data = ctx.data / "polyp"
    teacher_path, teacher_note = _teacher(ctx, data, out)
    summary = run_train(DistillTrainConfig(data=str(data), teacher=teacher_path, arch="mobilenet_v3_small",
                                           image_size=STUDENT_SIZE, epochs=STUDENT_EPOCHS, batch_size=BATCH_SIZE,
                                           lr=2e-3, out=str(out / "student"), seed=ctx.seed, device=ctx.device,
                                           progress=ctx.progress))
    ctx.artifacts["student"] = str(summary.weights)

    device = select_device(ctx.device)
    metrics: dict[str, object] = {}
    rows = ["| model | params | MB | CPU latency b=1 (ms) | test top-1 | test_shift top-1 |", "|---|---|---|---|---|---|"]
    for role, path in (("teacher", teacher_path), ("student", summary.weights)):
        model, ckpt = load_model(path, map_location=device)
        accs = [evaluate_class_folder(model, ckpt, data / split, device)["acc"] for split in ("test", "test_shift")]
        size = model_size(model)
        latency = cpu_latency_ms(model, ckpt["input_size"][0], runs=20)
        rows.append(f"| {role} {ckpt['arch']['name']} | {size['params']:,} | {size['mb']:.2f} | {latency:.2f} | "
                    f"{accs[0]:.3f} | {accs[1]:.3f} |")
        metrics[f"{role} test top-1"], metrics[f"{role} params"], metrics[f"{role} latency ms"] = accs[0], size["params"], latency
    metrics["student/teacher params"] = metrics["student params"] / metrics["teacher params"]
    metrics["teacher→student latency speed-up"] = metrics["teacher latency ms"] / metrics["student latency ms"]
    return DemoSection(
        title="distill: MobileNetV3-small student from the polyp recognizer",
        summary=f"Teacher: {teacher_note} (`{teacher_path}`). Student ({STUDENT_SIZE}² input) trained {STUDENT_EPOCHS} epochs "
                "with labels + "
                "Hinton KD + mutual information with a learnable Gaussian prior; the teacher sees a weak view, the "
                f"student a stronger one. Student checkpoint (shipped by the export stage): `{summary.weights}`.",
        metrics={k: v for k, v in metrics.items() if "params" not in k or "/" in k},
        images=[summary.run / "curves.png"],
        markdown="\n".join(rows),
    )
