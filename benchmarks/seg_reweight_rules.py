"""Evidence for seg-reweight: the weight-update rules, in a clean pool and with wrong rough masks.

Synthetic segmentation data (``fastmed.data.synthetic.seg``): 60 training images, 4 with
their exact mask and 56 with a rough one, of which a known fraction (``meta.csv`` column
``rough_wrong``) is deliberately wrong: 0 (every rough mask right) and 0.4. Variants (one
U-Net, the same steps and seeds; all but the last two without mixing):

  gamma1     -- rough images with fixed weight 1 (no reweighting): the baseline
  raw        -- the literal rule gamma_k += beta d_k from gamma0 = 0.5 (beta picked, see below)
  centered   -- gamma_k += beta (d_k - mean d) / mean|d - mean d| from 1 (the previous default)
  ratio      -- gamma_k += beta clip(d_k / median d - 1/2, -1, 1) from 1 (the default)
  oracle     -- gamma fixed to 0 on the wrong rough masks, 1 on the rest (wrong fraction 0.4 only;
                at 0 it is gamma1)
  claimed    -- the default rule + mixed images + two models + cross pseudo-labels, claim-8
                wiring (``--mix-regions split``: region i trains the main model, region j the
                auxiliary); wrong fraction 0.4 only
  claimed_both_regions -- the same with the previous wiring (each model learns both regions)

``raw``'s beta has the units of 1/d (the loss scale), the other rules' beta is in units of
gamma (0.2, the default): raw gets beta from {1, 3, 10} by the best validation Dice on a
tuning seed (not one of the reported seeds) at wrong fraction 0.4; every candidate's
numbers are in the JSON.

Reported per variant: test Dice of the best-on-validation checkpoint, the gamma AUC (1 - gamma
as a score for "rough mask is wrong"), mean gamma of the right and of the wrong rough masks;
mean +- sd over seeds and the paired difference against gamma1 of the same seed (and claimed
against ratio, claimed against claimed_both_regions). Writes
``benchmarks/results/seg_reweight_rules.{json,md}``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seg_reweight_rules.py [--seeds 0,1,2,3,4] [--epochs 12] [--cache runs.jsonl]
    .venv/bin/python benchmarks/seg_reweight_rules.py --quick   # smoke run into a temporary folder
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from machine_note import machine_note  # benchmarks/ is on sys.path
from quick import add_quick_options, results_folder, write_results
from seg_reweight_evidence import add_run_options, mean_sd

from fastmed.cfg.seg import SegReweightConfig
from fastmed.data.synthetic.seg import make_seg_dataset
from fastmed.seg.reweight.train import train

NO_MIX = {"mixing": False}
VARIANTS = {  # name -> (wrong fractions it runs at, options)
    "gamma1": ((0.0, 0.4), {**NO_MIX, "update_gamma": False}),
    "raw": ((0.0, 0.4), {**NO_MIX, "update_rule": "raw", "gamma_init": 0.5}),
    "centered": ((0.0, 0.4), {**NO_MIX, "update_rule": "centered"}),
    "ratio": ((0.0, 0.4), {**NO_MIX, "update_rule": "ratio"}),
    "oracle": ((0.4,), {**NO_MIX, "oracle_gamma": True}),
    "claimed": ((0.4,), {"update_rule": "ratio", "mixing": True, "mix_regions": "split"}),
    "claimed_both_regions": ((0.4,), {"update_rule": "ratio", "mixing": True, "mix_regions": "both"}),
}
PAIRS = [("claimed", "ratio"), ("claimed", "claimed_both_regions")]  # extra paired differences at 0.4
RAW_BETAS = (1.0, 3.0, 10.0)
SETTINGS = ("epochs", "lr", "n_train", "n_exact", "image_size", "base_width")  # the run options a cached result depends on
TUNE_SEED = 100


def run_one(data: Path, out: Path, seed: int, args, opts: dict, cache: dict[str, dict]) -> dict:
    """One training run's numbers; taken from ``cache`` (and appended to ``args.cache``) by its settings."""
    key = json.dumps({"seed": seed, "data": data.name, **opts, **{k: getattr(args, k) for k in SETTINGS}}, sort_keys=True)
    if key in cache:
        return cache[key]
    cfg = SegReweightConfig(data=str(data), out=str(out), seed=seed, device="cpu", progress=False, epochs=args.epochs,
                            lr=args.lr, image_size=args.image_size, base_width=args.base_width, n_exact=args.n_exact,
                            overlays=0, **opts)
    cfg.validate()
    t0 = time.perf_counter()
    s = train(cfg)
    m = s.metrics
    cache[key] = {"test_dice": m["test/dice"], "best_val_dice": s.best, "gamma_auc": m.get("gamma_auc"),
                  "gamma_mean_right": m.get("gamma_mean_right"), "gamma_mean_wrong": m.get("gamma_mean_wrong"),
                  "seconds": round(time.perf_counter() - t0, 1)}
    if args.cache:
        with open(args.cache, "a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "result": cache[key]}) + "\n")
    return cache[key]


def summarize(runs: list[dict], fraction: float, name: str, base: str | None) -> dict:
    """Mean +- sd of each metric, and of the paired difference against ``base`` (same seed)."""
    rs = {r["seed"]: r for r in runs if r["fraction"] == fraction and r["variant"] == name}
    row = {k: mean_sd([r[k] for r in rs.values()]) for k in ("test_dice", "gamma_auc", "gamma_mean_right", "gamma_mean_wrong")}
    if base:
        bs = {r["seed"]: r for r in runs if r["fraction"] == fraction and r["variant"] == base}
        row["dice_diff"] = mean_sd([rs[s]["test_dice"] - bs[s]["test_dice"] for s in rs if s in bs])
    return row


def markdown(res: dict) -> str:
    a = res["setup"]
    fmt = lambda ms: "–" if ms[0] != ms[0] else f"{ms[0]:.3f} ± {ms[1]:.3f}"  # noqa: E731
    sfmt = lambda ms: "–" if ms[0] != ms[0] else f"{ms[0]:+.3f} ± {ms[1]:.3f}"  # noqa: E731
    lines = ["# seg-reweight: update rules, clean pool and wrong rough masks", "",
             f"Synthetic data: {a['n_train']} training images ({a['n_exact']} exact masks, the rest rough), 16 val, 32 test; "
             f"{a['image_size']} px, U-Net base width {a['base_width']}, {a['epochs']} epochs, lr {a['lr']:g}; seeds {a['seeds']}. "
             f"raw: gamma0 = 0.5, beta = {res['raw_beta']:g} (picked from {list(RAW_BETAS)} by validation Dice, seed {TUNE_SEED}); "
             "the other rules: gamma0 = 1, beta = 0.2. Mean ± sd over seeds; Δ Dice: paired difference against gamma1 "
             "of the same seed and wrong fraction. gamma AUC: AUC of 1 - gamma for 'rough mask is wrong'.", ""]
    for frac, rows in res["table"].items():
        lines += [f"## rough-wrong fraction {frac}", "",
                  "| variant | test Dice | Δ Dice vs gamma1 | gamma AUC | mean gamma (right) | mean gamma (wrong) |",
                  "|---|---|---|---|---|---|"]
        for name, row in rows.items():
            lines.append(f"| {name} | {fmt(row['test_dice'])} | {sfmt(row.get('dice_diff', (float('nan'),) * 2)) if name != 'gamma1' else '–'} "
                         f"| {fmt(row['gamma_auc'])} | {fmt(row['gamma_mean_right'])} | {fmt(row['gamma_mean_wrong'])} |")
        lines.append("")
    for p in res["pairs"]:
        lines.append(f"- wrong fraction 0.4, {p['variant']} − {p['baseline']}: Δ test Dice {sfmt(p['dice_diff'])}")
    lines += ["", f"Total {res['total_seconds']:.0f} s; {res['machine']}; torch {torch.__version__}, "
              f"{a['threads']} thread(s).", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2,3,4")
    add_run_options(ap, epochs=12)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (data and run folders)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants (gamma1 always runs)")
    ap.add_argument("--cache", help="JSON-lines file of finished runs: reused by their settings, new ones appended "
                                    "(an interrupted table continues where it stopped)")
    add_quick_options(ap, "1 seed, 24 training images, 3 epochs")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.n_train, args.epochs = "0", 24, 3
    out = results_folder(args, "seg_reweight_rules")
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; choose from {list(VARIANTS)}")
    variants = {k: v for k, v in VARIANTS.items() if k == "gamma1" or k in args.variants.split(",")}
    work = Path(tempfile.mkdtemp(prefix="seg_reweight_rules_"))
    cache: dict[str, dict] = {}
    if args.cache and Path(args.cache).exists():
        rows = [json.loads(line) for line in Path(args.cache).read_text(encoding="utf-8").splitlines() if line.strip()]
        cache = {r["key"]: r["result"] for r in rows}
    note = machine_note()
    t_all = time.perf_counter()
    data = {f: make_seg_dataset(work / f"seg_{f:g}", {"train": args.n_train, "val": 16, "test": 32}, seed=123, size=64,
                                wrong_fraction=f) for f in (0.0, 0.4)}
    tuning = []
    for beta in RAW_BETAS[:1] if args.quick else RAW_BETAS:
        r = run_one(data[0.4], work / "runs" / f"tune_raw_b{beta:g}", TUNE_SEED, args, {**VARIANTS["raw"][1], "beta": beta}, cache)
        tuning.append({"beta": beta, "seed": TUNE_SEED, **r})
        print(json.dumps(tuning[-1]), flush=True)
    raw_beta = max(tuning, key=lambda r: r["best_val_dice"])["beta"]
    runs = []
    for name, (fractions, opts) in variants.items():  # variant by variant: an interrupted run leaves whole rows in the cache
        opts = {**opts, "beta": raw_beta} if name == "raw" else opts
        for seed in seeds:
            for f in fractions:
                r = run_one(data[f], work / "runs" / f"{name}_f{f}_s{seed}", seed, args, opts, cache)
                runs.append({"variant": name, "fraction": f, "seed": seed, **r})
                print(json.dumps(runs[-1]), flush=True)
    table = {str(f): {name: summarize(runs, f, name, None if name == "gamma1" else "gamma1")
                      for name, (fractions, _) in variants.items() if f in fractions} for f in (0.0, 0.4)}
    pairs = [{"variant": x, "baseline": y, "fraction": 0.4, "dice_diff": summarize(runs, 0.4, x, y)["dice_diff"]}
             for x, y in PAIRS if x in variants and y in variants]
    res = {"setup": {**{k: v for k, v in vars(args).items() if k != "out"}, "seeds": seeds, "n_val": 16, "n_test": 32,
                     "data_seed": 123, "beta_other_rules": SegReweightConfig(data="x").beta},
           "machine": note, "total_seconds": round(time.perf_counter() - t_all, 1),
           "raw_beta": raw_beta, "raw_beta_selection": tuning, "table": table, "pairs": pairs, "runs": runs}
    md = markdown(res)
    print(md)
    write_results(out, "seg_reweight_rules", res, md, work, args.keep)


if __name__ == "__main__":
    main()
