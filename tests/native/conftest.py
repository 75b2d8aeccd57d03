"""Session fixtures of the native (.pt2 / C++) tests: one trained tiny recognizer, one AOTInductor compile, one build.

The AOTInductor compile (~15 s for a 32x32 ResNet-18 on one core) and the
cmake build (~30 s) happen once per session.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_recognizer(synth_root, tmp_path_factory):
    """``best.pt`` of a ResNet-18 at 32x32 trained 1 epoch on the tiny synthetic polyp set."""
    from fastmed.cli import main

    run = tmp_path_factory.mktemp("native") / "train"
    assert main(["polyp", "train", "--data", str(synth_root / "polyp"), "--arch", "resnet18", "--epochs", "1",
                 "--image-size", "32", "--out", str(run)]) == 0
    return run / "weights" / "best.pt"


@pytest.fixture(scope="session")
def tiny_pt2(tiny_recognizer, synth_root):
    """The recognizer exported by ``fastmed export --format aoti`` for the CPU (parity-checked on val/)."""
    from fastmed.export import export

    return export(tiny_recognizer, "aoti", tiny_recognizer.with_name("tiny.pt2"), data=str(synth_root / "polyp" / "val"),
                  device="cpu").path


@pytest.fixture(scope="session")
def native_build(tmp_path_factory):
    """``cmake/`` configured and built into a temporary folder; skipped without cmake or a C++ compiler."""
    cmake, cxx = shutil.which("cmake"), shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if not cmake or not cxx:
        pytest.skip("needs cmake and a C++ compiler")
    build = tmp_path_factory.mktemp("native_build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    for cmd in ([cmake, "-S", str(REPO / "cmake"), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}", *generator],
                [cmake, "--build", str(build), "-j", "2"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return build


@pytest.fixture(scope="session")
def probe(synth_root, tiny_pt2, tmp_path_factory):
    """Probe files (see ``write_probe_images``) made from 7 validation images."""
    from fastmed.data.images import list_images
    from fastmed.export.native_runner import write_probe_images
    from fastmed.export.predictor import Predictor
    from fastmed.export.preprocess import read_images

    images, _ = read_images(list_images(synth_root / "polyp" / "val")[::2][:7])
    return write_probe_images(tmp_path_factory.mktemp("probe"), images, Predictor(tiny_pt2).meta.input_size)
