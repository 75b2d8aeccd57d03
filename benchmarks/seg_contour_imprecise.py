"""Evidence for the contour method on imprecise outlines and touching objects (table ``seg_contour_imprecise``).

Synthetic Kvasir-SEG-style data (``make_seg_dataset``): 48x48 images, half of
them with two touching lesions, the rest with one. The GeoJSON outlines are
simplified to 16 vertices and each vertex is moved radially by N(0, j^2) px,
j in ``--jitter``; masks/ and instances/ stay exact, and every score is
against them (the same images at every jitter: the imprecision draws have
their own random stream). For each jitter, number of training images and seed,
four U-Nets with the same initialisation and the same batches are trained for
the same number of steps from the outlines only:

* ``mask``        - mask loss only (``--corr-weight 0``);
* ``corr_dist``   - + correlation regression, distance term only (``--corr-mode distance``);
* ``corr_both``   - + correlation regression, distance x intensity (``--corr-mode both``);
* ``per_object``  - ``corr_both`` + 2 object slots (``--object-slots 2``: one mask and
  correlation map per object, Hungarian-matched to the outlines).

Metrics on held-out images: Dice and HD95 of the union mask against the exact
masks; object-separation error on the touching pairs (a pair is separated when
two different predicted instances each match one object with IoU >= 0.5;
instances are the slots for ``per_object``, else the connected components of
the mask, and for the correlation variants also the mask cut along the ridges
of the predicted fused map: ``separation.ridge_split``). Paired differences per
seed: every variant minus ``mask``; for the separation error also
``per_object`` minus ``corr_both`` (the fused map, either way).
Torch runs on one thread (shared machine).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/seg_contour_imprecise.py [--steps 120] [--seeds 0 1 2 3 4]
        [--jitter 0 1.5 3] [--n-train 4 16] [--variants mask corr_dist corr_both per_object]
        [--name seg_contour_imprecise] [--out DIR] [--quick] [--merge]

``--merge`` adds the ``--n-train`` cells of this run to the existing
``<name>.json`` (its other settings must be the same, and n_train no larger
than its largest) instead of replacing it: the training images are drawn from
the earlier run's pool, as in one run over all of them. The README's n_train 8 cells were added that way
(``--n-train 8 --merge``).

Writes ``benchmarks/results/<name>.{json,md}`` and a figure ``<name>.png``
(one touching validation image at the largest jitter and fewest images: the
outline given, each variant's mask, instances and correlation). The README's
second run (``--steps 400 --jitter 1.5 --n-train 16 --variants mask corr_both
per_object --name seg_contour_imprecise_long``) trains the slots longer.
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
from quick import add_quick_options, results_folder, write_results  # benchmarks/quick.py
from seg_contour_evidence import endless  # benchmarks/seg_contour_evidence.py

# variant -> SegContourConfig overrides
VARIANTS = {
    "mask": {"corr_weight": 0.0},
    "corr_dist": {"corr_weight": 1.0, "corr_mode": "distance"},
    "corr_both": {"corr_weight": 1.0, "corr_mode": "both"},
    "per_object": {"corr_weight": 1.0, "corr_mode": "both", "object_slots": 2},
}
METRICS = ("dice", "hd95", "sep_error", "sep_error_ridge")


def run_one(data: Path, n_train: int, seed: int, variant: str, args) -> tuple[dict, object]:
    """Train one model for ``args.steps`` steps, score it on ``val``; return the row and the task."""
    from fastmed.cfg.seg import SegContourConfig
    from fastmed.seg.contour.train import ContourTask, contour_splits

    cfg = SegContourConfig(data=str(data), n_train=n_train, seed=seed, base_width=args.base_width, depth=3,
                           batch_size=args.batch_size, image_size=args.size, lr=args.lr, device="cpu",
                           progress=False, augment=True, **VARIANTS[variant])
    cfg.validate()
    train_items, val_items = contour_splits(cfg)
    task = ContourTask(cfg, train_items, val_items, torch.device("cpu"))
    t0 = time.perf_counter()
    batches = endless(task.train_batches(0))
    for _ in range(args.steps):
        task.train_step(next(batches))
    metrics = task.evaluate()
    row = {"n_train": n_train, "seed": seed, "variant": variant, "train_s": round(time.perf_counter() - t0, 1),
           **{m: metrics.get(m, float("nan")) for m in METRICS}}
    return row, task


def mean_sd(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(np.nanmean(v)), float(np.nanstd(v, ddof=1)) if np.sum(np.isfinite(v)) > 1 else 0.0


def summarize(runs: list[dict], jitters: list[float], n_trains: list[int]) -> list[dict]:
    """Per (jitter, n_train): mean ± sd per variant and metric, paired differences vs ``mask``
    (and ``per_object`` - ``corr_both`` for the separation error); NaN for a variant not run."""
    rows = []
    for j, n in itertools.product(jitters, n_trains):
        by = {v: sorted((r for r in runs if r["jitter"] == j and r["n_train"] == n and r["variant"] == v),
                        key=lambda r: r["seed"]) for v in VARIANTS}
        row: dict = {"jitter": j, "n_train": n, "n_seeds": len(by["mask"])}
        for v, m in itertools.product(VARIANTS, METRICS):
            row[f"{v}/{m}"], row[f"{v}/{m}_sd"] = mean_sd([r[m] for r in by[v]])
        for v, m in itertools.product(list(VARIANTS)[1:], METRICS):
            row[f"{v}-mask/{m}"], row[f"{v}-mask/{m}_sd"] = mean_sd([b[m] - a[m] for a, b in zip(by["mask"], by[v])])
        for key, fused in (("per_object-corr_both/sep_error", "sep_error"), ("per_object-corr_both/sep_error_ridge", "sep_error_ridge")):
            row[key], row[key + "_sd"] = mean_sd([b["sep_error"] - a[fused] for a, b in zip(by["corr_both"], by["per_object"])])
        rows.append(row)
    return rows


def _pm(row: dict, key: str, digits: int = 3, sign: bool = False) -> str:
    fmt = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f"{fmt.format(row[key])} ± {row[key + '_sd']:.{digits}f}"


def to_markdown(res: dict) -> str:
    a = res["args"]
    lines = [
        "# seg-contour on imprecise outlines: mask-only vs + correlation vs per-object maps",
        "",
        f"Synthetic {a['size']}x{a['size']} images (half with two touching lesions), outlines simplified to 16 vertices "
        f"and jittered radially by N(0, j²) px; measured mean outline error (symmetric surface distance to the exact "
        f"mask) per jitter: {', '.join(f'j={j}: {e:.2f} px' for j, e in res['contour_error_px'].items())}. "
        f"U-Net width {a['base_width']}, depth 3, {a['steps']} steps of batch {a['batch_size']} (AdamW lr {a['lr']}, "
        f"flips/rot90), same init and batches for every variant; scored against the EXACT masks of {res['n_eval']} "
        f"held-out images ({res['n_touching']} touching pairs). Seeds {a['seeds']}. CPU, torch {res['torch']}, "
        f"1 thread, {res['machine']}; total {res['total_s']:.0f} s.",
        "",
        "## Dice and HD95 (exact masks); Δ = variant − mask-only, paired per seed (mean ± sd)",
        "",
        "| jitter px | train imgs | Dice mask | ΔDice corr_dist | ΔDice corr_both | ΔDice per_object | HD95 mask | ΔHD95 corr_dist | ΔHD95 corr_both | ΔHD95 per_object |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["summary"]:
        lines.append(f"| {r['jitter']} | {r['n_train']} | {_pm(r, 'mask/dice')} | {_pm(r, 'corr_dist-mask/dice', sign=True)} "
                     f"| {_pm(r, 'corr_both-mask/dice', sign=True)} | {_pm(r, 'per_object-mask/dice', sign=True)} "
                     f"| {_pm(r, 'mask/hd95', 2)} | {_pm(r, 'corr_dist-mask/hd95', 2, True)} "
                     f"| {_pm(r, 'corr_both-mask/hd95', 2, True)} | {_pm(r, 'per_object-mask/hd95', 2, True)} |")
    lines += [
        "",
        "## Object-separation error on touching pairs (fraction not separated; lower is better)",
        "",
        "| jitter px | train imgs | mask | corr_dist | corr_dist ridge cut | corr_both | corr_both ridge cut | per_object | "
        "Δ per_object − corr_both | Δ per_object − corr_both ridge cut |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["summary"]:
        lines.append(f"| {r['jitter']} | {r['n_train']} | {_pm(r, 'mask/sep_error', 2)} | {_pm(r, 'corr_dist/sep_error', 2)} "
                     f"| {_pm(r, 'corr_dist/sep_error_ridge', 2)} | {_pm(r, 'corr_both/sep_error', 2)} "
                     f"| {_pm(r, 'corr_both/sep_error_ridge', 2)} | {_pm(r, 'per_object/sep_error', 2)} "
                     f"| {_pm(r, 'per_object-corr_both/sep_error', 2, True)} | {_pm(r, 'per_object-corr_both/sep_error_ridge', 2, True)} |")
    lines += ["", "Instances: connected components of the mask (mask, corr_dist, corr_both), the mask cut along the "
              "ridges of the predicted fused correlation map (ridge cut: seeds where corr < 0.7, the rest joins the nearest "
              "seed), or the object slots (per_object). sd is over seeds (ddof 1). HD95 in pixels. Per-seed values: "
              f"`{a['name']}.json`; figure: `{a['name']}.png`.", ""]
    return "\n".join(lines)


MERGE_SAME = ("steps", "seeds", "jitter", "n_eval", "size", "base_width", "batch_size", "lr", "variants")


def merge_base(path: Path, args) -> dict:
    """The earlier result ``path`` that ``--merge`` adds to; its settings other than ``n_train`` must equal ``args``."""
    if not path.exists():
        raise SystemExit(f"--merge: {path} does not exist")
    old = json.loads(path.read_text())
    old_args = old["args"]
    old_args.setdefault("variants", list(VARIANTS))  # written before --variants existed: all of them
    differ = [k for k in MERGE_SAME if old_args.get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--merge: {path} was run with other {', '.join(differ)} "
                         f"({', '.join(f'{k}={old_args.get(k)}' for k in differ)})")
    if max(args.n_train) > max(old_args["n_train"]):  # its cells were drawn from fewer training images
        raise SystemExit(f"--merge: n_train {max(args.n_train)} is larger than the earlier run's training pool "
                         f"({max(old_args['n_train'])} images); run every n_train together instead")
    return old


def save_figure(path: Path, tasks: dict, title: str) -> None:
    """One touching validation image: image + given outline, exact mask, each variant's mask and instances."""
    from fastmed.seg.contour.dataset import contour_labels
    from fastmed.seg.contour.figure import contour_overlay, save_panels

    first = next(iter(tasks.values()))
    i, inst = first.val_ds.touching[0]
    lab = contour_labels(first.val_ds.items[i], first.cfg.image_size, first.params)
    rows = [[("image + given outline", contour_overlay(lab.image, lab.contours), None),
             ("exact instances", inst, "tab10", (0, 9)), ("given filled", lab.filled.any(0), "gray", (0, 1))]]
    for name, task in tasks.items():
        probs, corr, instances = task.predict_val()
        rows.append([(f"{name}: mask", (probs[i, 0] > 0.5).numpy(), "gray", (0, 1)),
                     (f"{name}: instances", instances[i].numpy(), "tab10", (0, 9)),
                     (f"{name}: corr.", corr[i, 0].numpy(), "viridis", (0, 1))])
    save_panels(path, rows, title)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--jitter", type=float, nargs="+", default=[0.0, 1.5, 3.0])
    parser.add_argument("--n-train", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--n-eval", type=int, default=32)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--base-width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                        help="variants to train (include mask for the paired differences)")
    parser.add_argument("--name", default="seg_contour_imprecise", help="stem of the result files")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (the synthetic data)")
    parser.add_argument("--merge", action="store_true",
                        help="add these --n-train cells to the existing <name>.json (same other settings) instead of replacing it")
    add_quick_options(parser, "1 seed, jitter 3, 4 training images, 40 steps, 12 held-out images")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.jitter, args.n_train, args.steps, args.n_eval = [0], [3.0], [4], 40, 12
    results = results_folder(args, "seg_contour_imprecise")
    base = merge_base(results / f"{args.name}.json", args) if args.merge else None
    all_n = sorted(set(args.n_train) | set(base["args"]["n_train"] if base else []))
    pool, figure_n = max(all_n), min(all_n)  # training images written per jitter (as the earlier run); the figure's cell
    torch.set_num_threads(1)
    from fastmed.data.synthetic.seg import make_seg_dataset
    from fastmed.seg.data import read_meta

    t_all, note = time.perf_counter(), machine_note()
    work = Path(tempfile.mkdtemp(prefix="seg_contour_imprecise_"))
    runs, errors, figure_tasks = [], {}, {}
    n_touching = 0
    for j in args.jitter:
        data = make_seg_dataset(work / f"jitter{j}", {"train": pool, "val": args.n_eval}, seed=321,
                                size=args.size, max_objects=1, contour_vertices=16, contour_jitter=j, touching=0.5)
        meta = list(read_meta(data / "val" / "meta.csv").values()) + list(read_meta(data / "train" / "meta.csv").values())
        errors[str(j)] = float(np.mean([float(m["contour_error_px"]) for m in meta]))
        n_touching = sum(m["touching"] == "1" for m in read_meta(data / "val" / "meta.csv").values())
        for n, seed in itertools.product(args.n_train, args.seeds):
            for variant in args.variants:
                row, task = run_one(data, n, seed, variant, args)
                row["jitter"] = j
                runs.append(row)
                if j == max(args.jitter) and n == figure_n and seed == args.seeds[0]:
                    figure_tasks[variant] = task
                print(f"jitter {j} n_train {n:2d} seed {seed} {variant:10s}: dice {row['dice']:.3f} hd95 {row['hd95']:.2f} "
                      f"sep_error {row['sep_error']:.2f} ridge {row['sep_error_ridge']:.2f} ({row['train_s']} s)", flush=True)
    total_s = time.perf_counter() - t_all
    if base:  # the earlier cells, less those rerun now
        runs = [r for r in base["runs"] if r["n_train"] not in args.n_train] + runs
        note = f"{base['machine']}; n_train {args.n_train} added by --merge: {note}"
        total_s += base["total_s"]
        args.n_train = all_n
    res = {"args": vars(args), "n_eval": args.n_eval, "n_touching": n_touching, "contour_error_px": errors,
           "torch": torch.__version__, "machine": note, "python": platform.python_version(),
           "total_s": total_s, "runs": runs, "summary": summarize(runs, args.jitter, args.n_train)}
    if figure_tasks:  # --merge without the figure's cell keeps the earlier figure
        save_figure(results / f"{args.name}.png", figure_tasks,
                    f"jitter {max(args.jitter)} px, {min(args.n_train)} training images, seed {args.seeds[0]}")
    write_results(results, args.name, res, to_markdown(res), work, keep=args.keep)
    print(to_markdown(res))


if __name__ == "__main__":
    main()
