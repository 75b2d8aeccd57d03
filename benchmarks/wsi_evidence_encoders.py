"""wsi evidence: random vs Models-Genesis pre-trained patch encoder, on the debris slides of ``wsi_evidence_regimes.py``.

1. ``WORK`` is the folder ``wsi_evidence_regimes.py --keep WORK`` left (slides
   with debris, tiles, debris ground truth).
2. The patches of the training slides are written as PNG images and the
   ``resnet18`` encoder is pre-trained on them with ``fastmed polyp pretrain``
   (Models Genesis: restore Bezier-remapped, pixel-shuffled patches; no labels;
   ``PRETRAIN`` settings). Test slides are never seen.
3. ``fastmed wsi features --encoder resnet18`` with those weights, and with a
   random init (seed 0), for every slide.
4. Training variants and metrics as in ``wsi_evidence_regimes.py`` (its
   ``evaluate``), 5 seeds, for both encoders.

Steps whose output exists in ``WORK`` are reused (the pre-training run, the
feature folders), so a rerun only retrains the MIL models.

    .venv/bin/python benchmarks/wsi_evidence_regimes.py --keep WORK
    .venv/bin/python benchmarks/wsi_evidence_encoders.py WORK

Writes ``benchmarks/results/wsi_evidence_encoders.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from machine_note import machine_note  # benchmarks/machine_note.py
from PIL import Image
from quick import RESULTS  # benchmarks/quick.py
from wsi_evidence import fit, split, train_cfg  # benchmarks/wsi_evidence.py
from wsi_evidence_regimes import METRICS, VARIANTS, evaluate, on_debris, paired  # benchmarks/wsi_evidence_regimes.py

from fastmed.cfg.polyp import PolypPretrainConfig
from fastmed.wsi.bags import load_bags, read_labels
from fastmed.wsi.features import SlidePatches, extract_features, geometry_of
from fastmed.wsi.patch_file import read_patch_file

PRETRAIN = dict(arch="resnet18", image_size=64, epochs=2, batch_size=64)
ROWS = ["bag + top-K only (no patch labels)", "all four losses, patch labels on 25 % of positives",
        "all four losses, patch labels on 100 % of positives"]
N_TEST, SEEDS, EPOCHS = 24, [0, 1, 2, 3, 4], 20  # as wsi_evidence_regimes.py's full run


def export_patches(tiles: Path, slide_ids: list[str], out: Path) -> int:
    """The patches of ``slide_ids`` as ``out/<slide>_<i>.png``; returns their number."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for sid in slide_ids:
        ps = read_patch_file(tiles / f"{sid}.h5")
        patches = SlidePatches(ps.attrs["slide_path"], ps.coords, geometry_of(ps))
        for i in range(len(patches)):
            Image.fromarray((patches[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(out / f"{sid}_{i:04d}.png")
            n += 1
    return n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("work", help="folder kept by `wsi_evidence_regimes.py --keep WORK`")
    args = p.parse_args()
    torch.set_num_threads(2)
    work = Path(args.work)
    labels = read_labels(work / "slides" / "labels.csv")
    train_ids = [b.slide_id for b in split(load_bags(work / "features", labels)[0], N_TEST)[0]]
    weights = work / "pretrain_run" / "weights" / "best.pt"
    res: dict = {"machine": f"{machine_note()}; torch {torch.__version__}, {torch.get_num_threads()} threads",
                 "pretrain": {**PRETRAIN, "images": "patches of the training slides only"}, "seeds": SEEDS, "epochs": EPOCHS,
                 "train_config": {k: v for k, v in dataclasses.asdict(train_cfg(epochs=EPOCHS)).items()
                                  if k not in ("features", "labels", "out", "resume", "progress")}, "encoders": {}}
    if not weights.is_file():
        from fastmed.polyp.pretrain import run_pretrain

        t0 = time.perf_counter()
        res["pretrain"]["images_n"] = export_patches(work / "tiles", train_ids, work / "pretrain_tiles")
        cfg = PolypPretrainConfig(data=str(work / "pretrain_tiles"), out=str(work / "pretrain_run"), device="cpu",
                                  progress=False, **PRETRAIN)
        cfg.validate()
        run_pretrain(cfg)
        res["pretrain"]["seconds"] = round(time.perf_counter() - t0, 1)
    res["pretrain"]["result"] = json.loads((work / "pretrain_run" / "summary.json").read_text()).get("metrics", {})
    for name, w in (("resnet18, random init", None), ("resnet18, Models-Genesis pre-trained", str(weights))):
        feats = work / ("features_r18_pre" if w else "features_r18_random")
        extract_features(work / "tiles", feats, "resnet18", weights=w, device="cpu", show_progress=False)
        bags, _ = load_bags(feats, labels)
        train, test = split(bags, N_TEST)
        assert [b.slide_id for b in train] == train_ids  # the same split as the pre-training images
        debris = on_debris(test, work / "slides" / "artefacts")
        rows = []
        for variant in ROWS:
            runs = []
            for seed in SEEDS:
                task, _ = fit(train, train_cfg(seed=seed, epochs=EPOCHS, **VARIANTS[variant]))
                runs.append({k: round(float(v), 4) for k, v in evaluate(task, test, debris).items()})
            rows.append({"variant": variant, "mean": {k: round(statistics.fmean(r[k] for r in runs), 4) for k in METRICS},
                         "sd": {k: round(statistics.stdev(r[k] for r in runs), 4) for k in METRICS}, "per_seed": runs,
                         "combined_minus_prob_patch_auc": paired(runs, "patch_auc_combined", "patch_auc_prob"),
                         "combined_minus_attention_debris_share": paired(runs, "debris_share_combined", "debris_share_attention")})
            print(name, variant, rows[-1]["mean"], flush=True)
        res["encoders"][name] = rows
    rnd, pre = res["encoders"].values()
    res["pretrained_minus_random"] = {q["variant"]: {k: paired([{"d": a[k] - b[k], "z": 0.0} for a, b in zip(q["per_seed"], r["per_seed"])],
                                                               "d", "z") for k in ("auc", "patch_auc_prob", "patch_auc_combined")}
                                      for q, r in zip(pre, rnd)}
    (RESULTS / "wsi_evidence_encoders.json").write_text(json.dumps(res, indent=2) + "\n")
    (RESULTS / "wsi_evidence_encoders.md").write_text(render_md(res))
    print(f"wrote {RESULTS / 'wsi_evidence_encoders.json'} and .md")


def render_md(res: dict) -> str:
    lines = ["# wsi evidence: random vs Models-Genesis pre-trained resnet18 encoder (debris slides)", "",
             f"Slides, split and metrics of `wsi_evidence_regimes.md`; pre-training {res['pretrain']}; "
             f"{res['epochs']} epochs, mean ± sd over seeds {res['seeds']}. {res['machine']}.", "",
             "| encoder | variant | slide AUC | patch AUC attention | patch AUC prob | patch AUC combined | combined − prob (paired) "
             "| debris share attention / prob / combined | combined − attention debris share (paired) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for enc, rows in res["encoders"].items():
        for r in rows:
            m, sd, d, d2 = r["mean"], r["sd"], r["combined_minus_prob_patch_auc"], r["combined_minus_attention_debris_share"]
            lines.append(f"| {enc} | {r['variant']} | {m['auc']:.3f} ± {sd['auc']:.3f} | {m['patch_auc_attention']:.3f} | "
                         f"{m['patch_auc_prob']:.3f} | {m['patch_auc_combined']:.3f} | {d['mean']:+.3f} ± {d['sd']:.3f} | "
                         f"{m['debris_share_attention']:.3f} / {m['debris_share_prob']:.3f} / {m['debris_share_combined']:.3f} | "
                         f"{d2['mean']:+.3f} ± {d2['sd']:.3f} |")
    lines += ["", "Pre-trained minus random, paired by seed (mean ± sd):", "",
              "| variant | slide AUC | patch AUC prob | patch AUC combined |", "|---|---|---|---|"]
    for variant, d in res["pretrained_minus_random"].items():
        lines.append(f"| {variant} | " + " | ".join(f"{d[k]['mean']:+.3f} ± {d[k]['sd']:.3f}"
                                                    for k in ("auc", "patch_auc_prob", "patch_auc_combined")) + " |")
    lines += ["", "Per-seed values: `wsi_evidence_encoders.json`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
