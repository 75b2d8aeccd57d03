"""The evidence scripts in benchmarks/ run end to end in ``--quick`` mode and their numbers show learning.

Marked ``slow`` (``make test-all`` runs them; ``make test`` skips them): each
script runs in a subprocess on one thread (about a minute each on an idle
core), writing into ``tmp_path``. The thresholds sit well above chance and
below what the quick runs gave (quoted at each assertion), so a method that
stops learning fails them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _quick(script: str, out: Path, *args: str) -> Path:
    """Run ``benchmarks/<script> --quick --out OUT``; return OUT."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_quick_never_writes_into_benchmarks_results():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "seg_contour_evidence.py"), "--quick", "--out",
                           str(BENCHMARKS / "results")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "does not write into" in done.stderr


def test_wsi_evidence_quick(tmp_path):
    out = _quick("wsi_evidence.py", tmp_path)
    res = json.loads((out / "wsi_evidence.json").read_text())
    assert (out / "wsi_evidence.md").stat().st_size > 0 and (out / "wsi_heatmap_example.png").stat().st_size > 0
    rows = {r["variant"]: r for r in res["training"]["rows"]}
    assert len(rows) == 4
    # 2 tumour + 2 normal test slides: slide AUC 0.5 is chance; the quick run gave 1.0 for every variant
    assert all(r["auc"] >= 0.75 for r in rows.values()), rows
    # localization over the test slides' patches (chance 0.5): 0.83 with all four losses
    assert rows["all four losses"]["patch_auc_combined"] >= 0.65
    assert res["train_config"]["epochs"] == res["training"]["epochs"]  # the settings recorded are the ones run


def test_wsi_evidence_regimes_quick(tmp_path):
    out = _quick("wsi_evidence_regimes.py", tmp_path)
    res = json.loads((out / "wsi_evidence_regimes.json").read_text())
    assert (out / "wsi_evidence_regimes.md").stat().st_size > 0
    assert 0 < res["test_patches"]["on_debris"] < 0.2  # the debris ground truth was written and read (quick: 3.8 %)
    rows = {r["variant"]: r for r in res["rows"]}
    assert len(rows) == 2 and all(len(r["per_seed"]) == 1 for r in rows.values())
    # 2 tumour + 2 normal test slides; the quick run gave slide AUC 1.0 and combined patch AUC 0.87-0.89 in both rows
    assert all(r["mean"]["auc"] >= 0.75 and r["mean"]["patch_auc_combined"] >= 0.65 for r in rows.values()), rows


def test_seg_reweight_evidence_quick(tmp_path):
    out = _quick("seg_reweight_evidence.py", tmp_path)
    res = json.loads((out / "seg_reweight_evidence.json").read_text())
    assert (out / "seg_reweight_evidence.md").stat().st_size > 0
    table = res["table"]
    assert set(table) == {"a_exact_only", "b_rough_gamma1", "c_reweight", "d_reweight_mix_2models"}
    # gamma separates the deliberately wrong rough masks (AUC 0.5 = chance). Quick settings (40 images, 15 epochs),
    # seeds 0 and 2: 0.97 for c and d (24 images: 0.94-1.0 for seeds 0, 1, 2)
    assert table["c_reweight"]["gamma_auc"][0] >= 0.8 and table["d_reweight_mix_2models"]["gamma_auc"][0] >= 0.8
    # the U-Net segments: best test Dice over the variants 0.84 (seed 0) and 0.75 (seed 2), well above the 0.32-0.41
    # of runs still on the plateau they start on. The best variant, not c: c's Dice is seed-dependent at this size
    # (seed 0: 0.84; seed 2: 0.40, and 0.41 with 24 images after 25 epochs)
    assert max(row["dice"][0] for row in table.values()) >= 0.5, table


def test_seg_reweight_rules_quick(tmp_path):
    out = _quick("seg_reweight_rules.py", tmp_path)
    res = json.loads((out / "seg_reweight_rules.json").read_text())
    assert (out / "seg_reweight_rules.md").stat().st_size > 0
    clean, wrong = res["table"]["0.0"], res["table"]["0.4"]
    assert set(clean) == {"gamma1", "raw", "centered", "ratio"}
    assert set(wrong) == {"gamma1", "raw", "centered", "ratio", "oracle", "claimed", "claimed_both_regions"}
    assert wrong["oracle"]["gamma_auc"][0] == 1.0 and wrong["gamma1"]["gamma_auc"][0] == 0.5
    # clean pool: ratio keeps the right masks' weights (quick run, seed 0: 1.00), centered lowers some (0.90)
    assert clean["ratio"]["gamma_mean_right"][0] >= 0.8 and clean["ratio"]["gamma_mean_right"][0] >= clean["centered"]["gamma_mean_right"][0]
    # with 40 % wrong masks every updating rule ranks them below the right ones (quick run: AUC 0.92-1.0)
    assert all(wrong[v]["gamma_auc"][0] >= 0.75 for v in ("raw", "centered", "ratio", "claimed")), wrong


def test_seg_contour_evidence_quick(tmp_path):
    out = _quick("seg_contour_evidence.py", tmp_path)
    res = json.loads((out / "seg_contour_evidence.json").read_text())
    assert (out / "seg_contour_evidence.md").stat().st_size > 0
    assert {r["corr_weight"] for r in res["runs"]} == {0.0, 1.0}
    for r in res["runs"]:
        assert r["dice"] >= 0.65, r  # seeds 0, 1, 2 gave 0.81-0.87 (both variants)


def test_seg_contour_imprecise_quick(tmp_path):
    out = _quick("seg_contour_imprecise.py", tmp_path)
    res = json.loads((out / "seg_contour_imprecise.json").read_text())
    assert (out / "seg_contour_imprecise.md").stat().st_size > 0 and (out / "seg_contour_imprecise.png").stat().st_size > 0
    assert {r["variant"] for r in res["runs"]} == {"mask", "corr_dist", "corr_both", "per_object"}
    assert res["n_touching"] > 0 and res["contour_error_px"]["3.0"] > 0.8  # jitter 3 moved the outlines
    for r in res["runs"]:
        assert r["dice"] >= 0.6, r  # the quick run gave 0.87 (mask, corr_*) and 0.73 (per_object)
        assert 0 <= r["sep_error"] <= 1, r
    # --merge refuses other settings and a larger n_train than the earlier pool, before training
    script = [sys.executable, str(BENCHMARKS / "seg_contour_imprecise.py"), "--merge", "--out", str(out)]
    for extra, why in ((["--quick", "--variants", "mask"], "other variants"),
                       (["--steps", "40", "--n-eval", "12", "--seeds", "0", "--jitter", "3", "--n-train", "8"], "training pool")):
        done = subprocess.run(script + extra, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0 and why in done.stderr, done.stderr[-2000:]
    # and replaces the cells it reruns (the same n_train here), keeping the rest of the record
    _quick("seg_contour_imprecise.py", out, "--merge")
    merged = json.loads((out / "seg_contour_imprecise.json").read_text())
    assert len(merged["runs"]) == len(res["runs"])  # replaced, not appended
    assert "added by --merge" in merged["machine"] and merged["args"]["n_train"] == [4]


def test_distill_evidence_quick(tmp_path):
    out = _quick("distill_evidence.py", tmp_path)
    res = json.loads((out / "distill_digits.json").read_text())
    assert (out / "distill.md").stat().st_size > 0
    # 10 digit classes: chance 0.1
    assert res["teacher"]["val_acc"] >= 0.6
    assert set(res["methods"]) == {"scratch", "mi_prior_kd"}
    assert all(m["mean"] >= 0.2 for m in res["methods"].values()), res["methods"]
    assert res["student"]["params"] < res["teacher"]["params"]


def test_distill_minority_quick(tmp_path):
    out = _quick("distill_minority.py", tmp_path)
    res = json.loads((out / "distill_minority.json").read_text())["datasets"]["digits"]
    assert (out / "distill_minority.md").stat().st_size > 0
    assert res["train_counts"][7:] == [14, 14, 14] and min(res["train_counts"][:7]) >= 140  # the cut: 10 %
    assert set(res["variants"]) >= {"ce", "kd", "l2_features", "mi", "mi_prior", "mi_prior_weak", "mi_only"}
    # 10 classes, chance 0.1; the quick run (8 px, 2 epochs) gave 0.67-0.69 with labels and 0.29 for MI only
    for name, v in res["variants"].items():
        assert v["balanced_acc"][0] >= (0.15 if name == "mi_only" else 0.4), (name, v)
    assert res["variants"]["mi_prior_weak"]["prior_mass_cut"][0] > res["variants"]["mi_prior"]["prior_mass_cut"][0]


def test_polyp_ablation_quick(tmp_path):
    out = _quick("polyp_ablation.py", tmp_path)
    res = json.loads((out / "polyp_ablation_quick.json").read_text())
    assert (out / "polyp_ablation_quick.md").stat().st_size > 0
    (seed,) = res["seeds"]
    assert set(seed["scores"]) == {"a", "a+pre", "b", "c", "c+pre", "d"}
    # 3 balanced classes: chance 1/3
    assert all(s["test"]["acc"] >= 0.5 for s in seed["scores"].values()), seed["scores"]
    for gen in seed["generated"].values():
        assert gen["judge_agreement"] >= 0.5 and gen["pixel_change"] > 0 and gen["noise_diversity"] > 0
    assert (out / "polyp_ablation_quick_samples_c.png").exists() and "(c) − (d)" in (out / "polyp_ablation_quick.md").read_text()


def test_bench_wsi_stream_quick(tmp_path):
    out = _quick("bench_wsi_stream.py", tmp_path)
    res = json.loads((out / "wsi_stream.json").read_text())
    assert (out / "wsi_stream.md").stat().st_size > 0
    assert res["stream_whole_cohort"]["peak_tree_pss_gb"] > 0 and len(res["subset_runs"]) == 4  # 2 seeds x memory/stream
    assert all(r["epoch_time_s"] for r in res["subset_runs"])



def test_bench_grad_dot_quick(tmp_path):
    out = _quick("bench_grad_dot.py", tmp_path, "--layers")
    res = json.loads((out / "grad_dot.json").read_text())
    assert (out / "grad_dot.md").stat().st_size > 0
    assert {(r["net"], r["M"]) for r in res["rows"]} == {(n, m) for n in ("convnet", "unet") for m in (2, 4, 8)}
    for r in res["rows"]:  # float32 errors against torch.func in float64: fastmed's within torch.func's own
        err = r["max_rel_err_vs_float64"]  # (quick run: convnet <= 6e-6; unet ~1e-3-5e-3 for all three, fp32 forward noise)
        assert max(err["fastmed auto"], err["fastmed torch"]) <= 2 * err["torch.func"] + 1e-5, r
        assert r["gflop"]["fwd+bwd"] > 0 and all(v > 0 for v in r["median_cpu_s"].values())
    layers = res["layer_crossover"]  # four 3x3 convs, a 1x1 conv, an up-conv; the pointwise way on the last two only
    assert len(layers) == 6 and res["gemm_gflop_s"] > 0
    assert ["pointwise" in r for r in layers] == [False] * 4 + [True] * 2
