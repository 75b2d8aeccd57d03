"""Shared fixtures: small random-init classifier checkpoints and their exports (built once per session)."""
from __future__ import annotations

import pytest
import torch

CLASSES = ["adenoma", "hyperplastic", "normal"]


def make_classifier_checkpoint(path, arch: str, input_size=(64, 64), seed: int = 0):
    """Save a random-init registered classifier as a fastmed checkpoint at ``path``."""
    from fastmed.engine.checkpoint import make_checkpoint, save_checkpoint
    from fastmed.nets.registry import create_model

    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(CLASSES))
    _set_batchnorm_statistics(model, input_size)
    ckpt = make_checkpoint(model, task="polyp", kind="classifier", arch=arch, arch_kwargs={"num_classes": len(CLASSES)},
                           class_names=CLASSES, input_size=list(input_size))
    save_checkpoint(path, ckpt)
    return path


def _set_batchnorm_statistics(model: torch.nn.Module, input_size) -> None:
    """One train-mode pass with momentum 1 so BatchNorm statistics are real (random-init eval
    models otherwise shrink activations to ~1e-10 logits, which would make parity tests vacuous)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.randn(16, 3, *input_size))
    for m in bns:
        m.momentum = 0.1
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    head.weight.data *= 20  # confident, input-dependent probabilities instead of ~uniform ones
    model.eval()


@pytest.fixture(scope="session")
def make_ckpt():
    """``make_ckpt(path, arch, input_size)`` → path of a fresh random-init checkpoint."""
    return make_classifier_checkpoint


@pytest.fixture(scope="session")
def polyp_dir(synth_root):
    return synth_root / "polyp"


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def mobilenet_ckpt(export_dir):
    """mobilenet_v3_small at 48x48 (the 64x64 synthetic images get resized)."""
    return make_classifier_checkpoint(export_dir / "mobilenet.pt", "mobilenet_v3_small", (48, 48))


@pytest.fixture(scope="session")
def resnet_ckpt(export_dir):
    return make_classifier_checkpoint(export_dir / "resnet.pt", "resnet18", (64, 64))


@pytest.fixture(scope="session")
def mobilenet_onnx(mobilenet_ckpt, polyp_dir):
    """fp32 ONNX of the MobileNet checkpoint (legacy exporter: fast), parity-checked on real images."""
    from fastmed.export import export

    return export(mobilenet_ckpt, "onnx", mobilenet_ckpt.with_suffix(".onnx"), data=str(polyp_dir / "val"),
                  exporter="torchscript").path


@pytest.fixture(scope="session")
def mobilenet_int8(mobilenet_ckpt, mobilenet_onnx, polyp_dir):
    """The Int8Result of quantizing the MobileNet ONNX (calibrated on train/, judged on val/).

    A random-init network agrees with its int8 self on ~80 % of images, so the agreement gate is
    lowered here (test_int8_gate.py tests the gate itself).
    """
    from fastmed.export import export

    return export(mobilenet_ckpt, "onnx-int8", mobilenet_ckpt.with_suffix(".int8.onnx"), calib=str(polyp_dir / "train"),
                  data=str(polyp_dir / "val"), from_onnx=mobilenet_onnx, min_agreement=0.5).int8
