"""wsi evidence in the regimes issue 13 names: debris in both classes, and patch labels on a fraction of the positive slides.

1. Data: ``make_slides(..., artefacts=("debris",))``: dark debris clumps on the
   tissue of every slide, tumour and normal alike, with their ground truth
   (``artefacts/<slide>.png``); small faint tumours as in ``wsi_evidence.py``.
   Tiled (64 px at 0.5 mpp) and encoded with the ``tiny`` encoder (random fixed
   convolutions); a patch lies on debris when at least ``ON_ARTEFACT`` of its
   pixels are debris.
2. Variants, trained with ``fastmed wsi train``'s defaults (``WsiTrainConfig``;
   only epochs, seed, loss weights and ``patch_label_fraction`` set): bag + top-K
   losses only (no patch labels), and all four losses with patch labels on 0, 25,
   50 and 100 % of the positive training slides (negative slides are all-negative
   by definition and keep their labels).
3. Metrics on the test slides, per seed: slide AUC; patch AUC (against the
   tumour regions) of sigmoid(attention), the patch probability and their
   product (the combined map); the share of each slide's top-10 % patches by
   attention, by the patch probability and by the combined map that lie on
   debris (chance: the share of all patches on debris). Paired per-seed
   differences: combined minus probability (patch AUC), combined minus
   attention (debris share).

    .venv/bin/python benchmarks/wsi_evidence_regimes.py [--quick] [--out DIR]

Writes ``benchmarks/results/wsi_evidence_regimes.json`` and ``.md``; ``--quick``
(12 small slides, 1 seed, 2 variants) writes them into a temporary folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine_note import machine_note  # benchmarks/machine_note.py
from PIL import Image
from quick import add_quick_options, results_folder, write_results  # benchmarks/quick.py (this folder is on sys.path)
from wsi_evidence import fit, split, train_cfg  # benchmarks/wsi_evidence.py

from fastmed.data.synthetic.slides import make_slides
from fastmed.wsi.bags import SlideBag, load_bags, read_labels
from fastmed.wsi.features import extract_features
from fastmed.wsi.metrics import binary_metrics
from fastmed.wsi.tile import TileOptions, tile_folder
from fastmed.wsi.train import patch_localization, predict_bags

PATCH = 64
ON_ARTEFACT = 0.1  # a patch lies on debris when at least this fraction of its pixels are debris
TOP = 0.1          # the top 10 % of each slide's patches
NO_LABELS = dict(w_patch=0.0, w_bag=1.0, w_topk=0.5, w_attn=0.0)
VARIANTS = {
    "bag + top-K only (no patch labels)": dict(NO_LABELS),
    "all four losses, patch labels on 0 % of positives": dict(patch_label_fraction=0.0),
    "all four losses, patch labels on 25 % of positives": dict(patch_label_fraction=0.25),
    "all four losses, patch labels on 50 % of positives": dict(patch_label_fraction=0.5),
    "all four losses, patch labels on 100 % of positives": dict(patch_label_fraction=1.0),
}
METRICS = ["auc", "patch_auc_attention", "patch_auc_prob", "patch_auc_combined",
           "debris_share_attention", "debris_share_prob", "debris_share_combined"]


def on_debris(bags: list[SlideBag], masks: Path) -> dict[str, np.ndarray]:
    """Per slide ``(n,)`` bool: the patch lies on debris (``masks/<slide>.png``, level 0, as the patch coordinates)."""
    out = {}
    for bag in bags:
        mask = np.asarray(Image.open(masks / f"{bag.slide_id}.png")) > 0
        out[bag.slide_id] = np.array([mask[y:y + PATCH, x:x + PATCH].mean() >= ON_ARTEFACT for x, y in bag.coords])
    return out


def top_share(scores: np.ndarray, flag: np.ndarray) -> tuple[int, int]:
    """``(flagged, total)`` among the top ``TOP`` of ``scores`` (at least one patch)."""
    k = max(1, int(round(TOP * len(scores))))
    top = np.argsort(-scores, kind="stable")[:k]
    return int(flag[top].sum()), k


def evaluate(task, test: list[SlideBag], debris: dict[str, np.ndarray]) -> dict[str, float]:
    """Slide AUC, patch AUCs and the debris share of the top patches by each map, over the test slides."""
    preds = predict_bags(task.model, test, torch.device("cpu"))
    y = np.array([b.label for b in test])
    res = {"auc": binary_metrics(y, np.array([p["prob"] for p in preds]), 0.5)["auc"], **patch_localization(test, preds)}
    counts = {m: [0, 0] for m in ("attention", "prob", "combined")}
    for bag, p in zip(test, preds):
        att = 1 / (1 + np.exp(-p["attention"]))
        for m, s in (("attention", att), ("prob", p["patch_prob"]), ("combined", att * p["patch_prob"])):
            hit, k = top_share(s, debris[bag.slide_id])
            counts[m][0] += hit
            counts[m][1] += k
    res.update({f"debris_share_{m}": hit / k for m, (hit, k) in counts.items()})
    return res


def paired(rows: list[dict], a: str, b: str) -> dict:
    """Per-seed ``a - b``, mean and sd."""
    d = [r[a] - r[b] for r in rows]
    return {"per_seed": [round(v, 4) for v in d], "mean": round(statistics.fmean(d), 4),
            "sd": round(statistics.stdev(d), 4) if len(d) > 1 else 0.0}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quick_options(p, "12 small slides, 1 seed, 2 variants, 1 thread")
    p.add_argument("--keep", help="keep the work folder here (default: a temporary folder)")
    args = p.parse_args()
    torch.set_num_threads(1 if args.quick else 2)
    n_slides, n_test, seeds, epochs = (12, 4, [0], 30) if args.quick else (60, 24, [0, 1, 2, 3, 4], 20)
    height, width, radius, contrast = (512, 768, (0.06, 0.11), 1.0) if args.quick else (768, 1024, (0.04, 0.08), 0.6)
    variants = {k: VARIANTS[k] for k in list(VARIANTS)[::4]} if args.quick else VARIANTS
    results = results_folder(args, "wsi_evidence_regimes")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="wsi_regimes_"))
    t0 = time.perf_counter()
    make_slides(work / "slides", n_slides, seed=0, height=height, width=width, tumor_radius=radius, contrast=contrast,
                artefacts=("debris",))
    opts = TileOptions(patch_size=PATCH, mpp=0.5, mask_downsample=16)
    tile_folder(work / "slides", work / "tiles", opts, workers=2, overwrite=True, show_progress=False)
    extract_features(work / "tiles", work / "features", "tiny", device="cpu", overwrite=True, show_progress=False)
    bags, _ = load_bags(work / "features", read_labels(work / "slides" / "labels.csv"))
    train, test = split(bags, n_test)
    debris = on_debris(test, work / "slides" / "artefacts")
    flags = np.concatenate(list(debris.values()))
    tumour = np.concatenate([b.patch_labels.numpy() == 1 for b in test])
    res: dict = {
        "machine": f"{machine_note()}; torch {torch.__version__}, {torch.get_num_threads()} threads", "quick": args.quick,
        "slides": {"n": n_slides, "train": len(train), "test": len(test), "size": f"{height}x{width} level-0 px, mpp 0.5",
                   "tumour_radius": list(radius), "contrast": contrast, "artefacts": ["debris"], "encoder": "tiny",
                   "data_s": round(time.perf_counter() - t0, 1)},
        "test_patches": {"n": int(len(flags)), "on_debris": round(float(flags.mean()), 4),
                         "tumour": round(float(tumour.mean()), 4), "tumour_and_debris": int((flags & tumour).sum()),
                         "on_debris_rule": f">= {ON_ARTEFACT} of the patch's pixels", "top": TOP},
        "train_config": {k: v for k, v in dataclasses.asdict(train_cfg(epochs=epochs)).items()
                         if k not in ("features", "labels", "out", "resume", "progress")},
        "epochs": epochs, "seeds": seeds, "rows": [],
    }
    print(res["slides"], res["test_patches"], flush=True)
    for name, over in variants.items():
        runs = []
        for seed in seeds:
            task, _ = fit(train, train_cfg(seed=seed, epochs=epochs, **over))
            runs.append({k: round(float(v), 4) for k, v in evaluate(task, test, debris).items()})
        row = {"variant": name, "settings": over,
               "mean": {k: round(statistics.fmean(r.get(k, float("nan")) for r in runs), 4) for k in METRICS},
               "sd": {k: round(statistics.stdev(r.get(k, float("nan")) for r in runs), 4) if len(runs) > 1 else 0.0
                      for k in METRICS},
               "per_seed": runs,
               "combined_minus_prob_patch_auc": paired(runs, "patch_auc_combined", "patch_auc_prob"),
               "combined_minus_attention_debris_share": paired(runs, "debris_share_combined", "debris_share_attention")}
        res["rows"].append(row)
        print(name, row["mean"], flush=True)
    write_results(results, "wsi_evidence_regimes", res, render_md(res), work, keep=bool(args.keep))


def render_md(res: dict) -> str:
    s, tp = res["slides"], res["test_patches"]
    lines = [
        "# wsi evidence: debris in both classes, patch labels on a fraction of the positive slides", "",
        f"{s['n']} slides {s['size']} (half tumour-positive; tumour radius {s['tumour_radius']} of the short side, "
        f"contrast {s['contrast']}; dark debris clumps on the tissue of every slide); {s['train']} train / {s['test']} test "
        f"slides; {s['encoder']} encoder; {res['epochs']} epochs, `wsi train` defaults otherwise; mean ± sd over seeds "
        f"{res['seeds']}. {res['machine']}.", "",
        f"Test patches: {tp['n']}, {tp['on_debris']:.1%} on debris ({tp['on_debris_rule']}; the chance level of the "
        f"debris shares), {tp['tumour']:.1%} tumour, {tp['tumour_and_debris']} both. Debris share: of each test slide's "
        f"top {tp['top']:.0%} patches by the map, the share on debris.", "",
        "| variant | slide AUC | patch AUC attention | patch AUC prob | patch AUC combined | combined − prob (paired) "
        "| debris share attention | debris share prob | debris share combined | combined − attention (paired) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        m, sd = r["mean"], r["sd"]
        cell = lambda k: f"{m[k]:.3f} ± {sd[k]:.3f}"  # noqa: E731
        d1, d2 = r["combined_minus_prob_patch_auc"], r["combined_minus_attention_debris_share"]
        lines.append(f"| {r['variant']} | {cell('auc')} | {cell('patch_auc_attention')} | {cell('patch_auc_prob')} | "
                     f"{cell('patch_auc_combined')} | {d1['mean']:+.3f} ± {d1['sd']:.3f} | {cell('debris_share_attention')} | "
                     f"{cell('debris_share_prob')} | {cell('debris_share_combined')} | {d2['mean']:+.3f} ± {d2['sd']:.3f} |")
    lines += ["", "Per-seed values: `wsi_evidence_regimes.json` (`rows[].per_seed`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
