"""Issue 12's default check: the default ``polyp augment`` (300 updates at 32 px) then ``generate --per-image 2``
meets the four generation numbers, at the default training seed and at --seed 1 (which the design before
--d-augment failed: pixel change 0.015-0.018 in every epoch, 0.016 from generate). Slow (about 2.5 minutes per
seed on one CPU thread); a GAN trajectory, pinned to the CPU and
to ONE intra-op thread: tests/conftest.py sets two threads, and two threads sum convolution gradients in another order
(measured: pixel change 0.019109 vs 0.019108 after 10 updates), which over 300 adversarial updates is another
trajectory than the CLI's under OMP_NUM_THREADS=1 (the numbers in benchmarks/results/polyp_generate_seeds.md)."""
from __future__ import annotations

import json

import pytest

from fastmed.cli import main


@pytest.mark.slow
@pytest.mark.parametrize("train_seed", [0, 1])
def test_default_augment_then_generate_meets_the_four_generation_numbers(tmp_path, one_thread, train_seed):
    from fastmed.data.synthetic import make_synthetic

    data = make_synthetic(tmp_path / "synth", seed=9, size="small", parts=("polyp",)) / "polyp"
    run, out = tmp_path / "gen", tmp_path / "generated"
    assert main(["polyp", "augment", "--data", str(data), "--epochs", "6", "--steps-per-epoch", "50", "--image-size", "32",
                 "--device", "cpu", "--out", str(run), "--progress", "false", "--seed", str(train_seed)]) == 0
    assert main(["polyp", "generate", "--weights", str(run / "weights" / "best.pt"), "--data", str(data), "--out", str(out),
                 "--per-image", "2", "--device", "cpu", "--progress", "false"]) == 0
    m = json.loads((out / "summary.json").read_text())["metrics"]
    print("generated-set measures:", json.dumps(m))  # seen with pytest -s
    assert m["pixel_change"] >= 0.03  # prediction weight 3 (before 0c9f2f7): 0.023
    assert m["noise_diversity"] >= 0.01
    assert m["judge_agreement"] >= 0.85 * m["judge_real_accuracy"]
    assert m["spread_generated"] >= m["spread_real"]  # no collapse
