"""``cmake/``'s ``fastmed-run`` against the Python ``Predictor`` (skipped without cmake or a C++ compiler).

Tolerances: ``EXACT`` at model size and for larger PNG/JPEG files, ``ONE_STEP_RESIZE``
for images >= 8x the input size (why: ``fastmed.export.native_runner``).
"""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from fastmed.export.native_runner import EXACT_TOL as EXACT, ONE_STEP_RESIZE_TOL as ONE_STEP_RESIZE


@pytest.fixture(scope="module")
def runner(native_build):
    return native_build / "fastmed-run"


def _run(runner, model, files, tmp_path, batch=1):
    from fastmed.export.native_runner import run_native

    return run_native(runner, model, files, tmp_path / f"out_b{batch}.csv", batch=batch)


@pytest.mark.parametrize("batch", [1, 7])
def test_runner_matches_the_checkpoint_at_model_size(runner, tiny_recognizer, tiny_pt2, probe, tmp_path, batch):
    from fastmed.export import Predictor

    ref = Predictor(tiny_recognizer)
    r = _run(runner, tiny_pt2, probe.at_size, tmp_path, batch)
    assert r.returncode == 0, r.stderr
    assert r.paths == [str(p) for p in probe.at_size]
    assert r.class_names == ref.class_names  # prob_ columns in the model's class order
    expected = ref.predict(probe.at_size)
    assert np.abs(r.probs - expected).max() <= EXACT
    assert r.classes == [ref.class_names[i] for i in expected.argmax(1)]
    assert set(r.latency_ms) == {"compute", "decode+preprocess+compute"}
    assert 0 < r.latency_ms["compute"]["p50"] <= r.latency_ms["compute"]["p99"]


def test_runner_resizes_larger_png_and_jpeg_as_python_does(runner, tiny_recognizer, tiny_pt2, probe, tmp_path):
    from fastmed.export import Predictor

    files = probe.larger + probe.jpeg
    r = _run(runner, tiny_pt2, files, tmp_path, batch=7)
    assert r.returncode == 0, r.stderr
    assert np.abs(r.probs - Predictor(tiny_recognizer).predict(files)).max() <= EXACT


def test_runner_converts_grey_alpha_palette_and_16_bit_pngs_as_python_does(runner, tiny_recognizer, tiny_pt2, probe,
                                                                          tmp_path):
    from fastmed.export import Predictor

    r = _run(runner, tiny_pt2, probe.modes, tmp_path, batch=7)
    assert r.returncode == 0 and r.paths == [str(p) for p in probe.modes], r.stderr
    assert np.abs(r.probs - Predictor(tiny_recognizer).predict(probe.modes)).max() <= EXACT


def test_runner_on_huge_images_within_the_documented_tolerance(runner, tiny_recognizer, tiny_pt2, probe, tmp_path):
    from fastmed.export import Predictor

    r = _run(runner, tiny_pt2, probe.huge, tmp_path, batch=7)
    expected = Predictor(tiny_recognizer).predict(probe.huge)
    assert np.abs(r.probs - expected).max() <= ONE_STEP_RESIZE
    assert (r.probs.argmax(1) == expected.argmax(1)).all()


def test_runner_skips_corrupt_images_and_predicts_the_rest(runner, tiny_pt2, probe, tmp_path):
    good = probe.at_size[:2]
    files = [probe.corrupt[0], good[0], probe.corrupt[1], good[1]]
    r = _run(runner, tiny_pt2, files, tmp_path, batch=7)
    assert r.returncode == 0, r.stderr
    assert r.paths == [str(p) for p in good]
    assert r.skipped == [str(p) for p in probe.corrupt]
    only_bad = _run(runner, tiny_pt2, probe.corrupt, tmp_path)
    assert only_bad.returncode == 1 and only_bad.paths == []


def test_a_bad_model_file_is_a_one_line_error(runner, tiny_recognizer, probe, tmp_path):
    for model in (tiny_recognizer, tmp_path / "missing.pt2"):  # a .pt checkpoint is no AOTInductor package
        r = _run(runner, model, probe.at_size[:1], tmp_path)
        assert r.returncode == 2
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr


def test_ctest_entry_passes(native_build, tiny_recognizer, tiny_pt2):
    env = dict(os.environ, FASTMED_NATIVE_MODEL=str(tiny_pt2), FASTMED_NATIVE_REFERENCE=str(tiny_recognizer))
    proc = subprocess.run(["ctest", "--output-on-failure"], cwd=native_build, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "1 tests passed" in proc.stdout or "100% tests passed" in proc.stdout
