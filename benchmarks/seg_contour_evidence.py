"""Evidence for the contour method: does the correlation regression help the mask?

Synthetic Kvasir-SEG-style data with GeoJSON contours (64x64, 1-3 lesions per
image). For several numbers of training images and seeds, two U-Nets with the
same initialisation and the same batches are trained for the same number of
steps from the contour labels:

* ``mask``        — mask loss only (BCE + soft Dice; ``--corr-weight 0``);
* ``mask+corr``   — mask loss + correlation regression (``--corr-weight 1``).

Both are scored on a held-out split (Dice, IoU, HD95 against the filled
polygons). Paired differences (mask+corr minus mask) per seed are summarised.
Torch runs on one thread (the machine is shared; two threads under load were
~8x slower here).

    .venv/bin/python benchmarks/seg_contour_evidence.py [--steps 150] [--seeds 0 1 2] [--n-train 4 12 32] [--out DIR]

Writes ``benchmarks/results/seg_contour_evidence.json`` and ``.md`` (``--quick``: into a temporary folder).
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder  # benchmarks/quick.py
VARIANTS = {"mask": 0.0, "mask+corr": 1.0}


def endless(loader):
    while True:
        yield from loader


def run_one(data: Path, n_train: int, seed: int, corr_weight: float, steps: int, args) -> dict:
    """Train one model for ``steps`` steps and score it on the ``val`` split."""
    from fastmed.cfg.seg import SegContourConfig
    from fastmed.seg.contour.train import ContourTask, contour_splits

    cfg = SegContourConfig(data=str(data), n_train=n_train, seed=seed, corr_weight=corr_weight,
                         base_width=args.base_width, depth=3, batch_size=args.batch_size, lr=args.lr,
                         device="cpu", progress=False, augment=True)
    cfg.validate()
    torch.manual_seed(seed)
    train_items, val_items = contour_splits(cfg)
    task = ContourTask(cfg, train_items, val_items, torch.device("cpu"))
    t0 = time.perf_counter()
    batches = endless(task.train_batches(0))
    for _ in range(steps):
        task.train_step(next(batches))
    metrics = task.evaluate()
    return {"n_train": n_train, "seed": seed, "corr_weight": corr_weight, "steps": steps,
            "train_s": round(time.perf_counter() - t0, 1), **metrics}


def summarize(runs: list[dict], n_trains: list[int]) -> list[dict]:
    """Mean/std per (n_train, variant) and the mean paired difference per n_train."""
    rows = []
    for n in n_trains:
        row: dict = {"n_train": n}
        by_var = {v: sorted((r for r in runs if r["n_train"] == n and r["corr_weight"] == w), key=lambda r: r["seed"])
                  for v, w in VARIANTS.items()}
        for v, rs in by_var.items():
            for m in ("dice", "iou", "hd95", "corr_mae"):
                vals = np.array([r[m] for r in rs], float)
                row[f"{v}/{m}"] = float(np.nanmean(vals))
                row[f"{v}/{m}_std"] = float(np.nanstd(vals))
        for m in ("dice", "hd95"):
            diffs = np.array([b[m] - a[m] for a, b in zip(by_var["mask"], by_var["mask+corr"])], float)
            row[f"diff/{m}"] = float(np.nanmean(diffs))
            row[f"diff/{m}_wins"] = int(np.sum(diffs > 0 if m == "dice" else diffs < 0))
            row["n_seeds"] = len(diffs)
        rows.append(row)
    return rows


def to_markdown(res: dict) -> str:
    a = res["args"]
    lines = [
        "# seg-contour evidence: mask loss only vs mask + correlation loss",
        "",
        f"Synthetic 64x64 images with 1-3 lesions and GeoJSON contours; U-Net base width {a['base_width']}, depth 3, "
        f"{a['steps']} steps of batch {a['batch_size']} (AdamW lr {a['lr']}, flips/rot90), same init and batches for both "
        f"variants; scored on {res['n_eval']} held-out images (masks from the contours). Seeds {a['seeds']}. "
        f"CPU, torch {res['torch']}, 1 thread, {res.get('machine', '')}; total {res['total_s']:.0f} s.",
        "",
        "| train images | Dice mask | Dice mask+corr | HD95 mask | HD95 mask+corr | ΔDice (wins) | ΔHD95 (wins) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in res["summary"]:
        lines.append(
            f"| {r['n_train']} | {r['mask/dice']:.3f} ± {r['mask/dice_std']:.3f} | {r['mask+corr/dice']:.3f} ± {r['mask+corr/dice_std']:.3f} "
            f"| {r['mask/hd95']:.2f} ± {r['mask/hd95_std']:.2f} | {r['mask+corr/hd95']:.2f} ± {r['mask+corr/hd95_std']:.2f} "
            f"| {r['diff/dice']:+.3f} ({r['diff/dice_wins']}/{r['n_seeds']}) | {r['diff/hd95']:+.2f} ({r['diff/hd95_wins']}/{r['n_seeds']}) |")
    lines += ["", "± is the std over seeds; Δ = mask+corr minus mask, averaged over seeds (paired); wins = seeds where "
              "mask+corr is better (higher Dice / lower HD95). HD95 in pixels.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, nargs="+", default=[4, 12, 32])
    parser.add_argument("--n-eval", type=int, default=48)
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--name", default="seg_contour_evidence")
    add_quick_options(parser, "1 seed, 8 training images, 60 steps, 16 held-out images")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n_train, args.steps, args.n_eval = [0], [8], 60, 16
    results = results_folder(args, "seg_contour_evidence")
    torch.set_num_threads(1)
    from fastmed.data.synthetic.seg import make_seg_dataset

    t_all = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = make_seg_dataset(Path(tmp) / "seg", {"train": max(args.n_train), "val": args.n_eval}, seed=123, size=64)
        for n, seed, (variant, w) in itertools.product(args.n_train, args.seeds, VARIANTS.items()):
            r = run_one(data, n, seed, w, args.steps, args)
            runs.append(r)
            print(f"n_train {n:3d} seed {seed} {variant:9s}: dice {r['dice']:.3f} iou {r['iou']:.3f} "
                  f"hd95 {r['hd95']:.2f} corr_mae {r['corr_mae']:.3f} ({r['train_s']} s)", flush=True)
    res = {"args": vars(args), "n_eval": args.n_eval, "torch": torch.__version__, "machine": machine_note(), "python": platform.python_version(),
           "total_s": time.perf_counter() - t_all, "runs": runs, "summary": summarize(runs, args.n_train)}
    (results / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    (results / f"{args.name}.md").write_text(to_markdown(res))
    print(to_markdown(res))


if __name__ == "__main__":
    main()
