"""Evidence for the wsi method on synthetic slides with known tumour regions.

1. Data: ``make_slides`` (every other slide tumour-positive; smaller, fainter
   tumours than the default with ``--hard``), split into train and test slides.
2. Tiling throughput (tiles/s): coordinates only, and with every tile read
   (``verify``), on this machine.
3. Features: the ``tiny`` encoder (random fixed convolutions; ResNet-50 is too
   slow for this CPU budget) — patch-feature throughput recorded.
4. Training variants, several seeds each, evaluated on the test slides: all
   four losses; without losses 1+4 (no patch labels); without loss 3 (top-K);
   bag loss only. Slide AUC/accuracy, and localization: patch AUC of
   sigmoid(attention), of the patch probability and of their product against
   the true tumour regions.
5. Time per training epoch, ragged batches (several slides per step) vs one
   slide per step, on these slides and on random features of realistic size
   (ResNet-50-layer3 width 1024, 500-6000 patches per slide).

Training runs with the options of ``fastmed wsi train`` (``WsiTrainConfig``'s
defaults; only the epochs, seeds, loss weights and, for the timing, the slides
per step are set here).

    .venv/bin/python benchmarks/wsi_evidence.py [--quick] [--out DIR]

Writes ``benchmarks/results/wsi_evidence.json`` and ``.md`` (+ an example heatmap PNG);
``--quick`` (12 small slides, 1 seed, 1 thread, about a minute) writes them into a temporary folder.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine_note import machine_note  # benchmarks/machine_note.py
from quick import add_quick_options, results_folder, write_results  # benchmarks/quick.py (this folder is on sys.path)

from fastmed.cfg.wsi import WsiTrainConfig
from fastmed.data.split import stratified_split
from fastmed.data.synthetic.slides import make_slides
from fastmed.wsi.bags import SlideBag, load_bags, read_labels
from fastmed.wsi.features import extract_features
from fastmed.wsi.tile import TileOptions, tile_folder
from fastmed.wsi.train import WsiTrainTask, evaluate_bags

VARIANTS = {
    "all four losses": dict(w_patch=1.0, w_bag=1.0, w_topk=0.5, w_attn=0.5),
    "no patch labels (losses 1, 4 off)": dict(w_patch=0.0, w_bag=1.0, w_topk=0.5, w_attn=0.0),
    "no top-K (loss 3 off)": dict(w_patch=1.0, w_bag=1.0, w_topk=0.0, w_attn=0.5),
    "bag loss only": dict(w_patch=0.0, w_bag=1.0, w_topk=0.0, w_attn=0.0),
}


def train_cfg(**over) -> WsiTrainConfig:
    """``fastmed wsi train``'s config with ``over`` set (the bags are passed in memory, so no folders are read)."""
    cfg = WsiTrainConfig(features="(bags in memory)", labels="(bags in memory)", device="cpu", progress=False, **over)
    cfg.validate()
    return cfg


def fit(train: list[SlideBag], cfg: WsiTrainConfig) -> tuple[WsiTrainTask, list[float]]:
    """Train ``cfg.epochs`` epochs (no validation); return the task and the seconds of each epoch."""
    torch.manual_seed(cfg.seed)
    task = WsiTrainTask(cfg, train, [], torch.device("cpu"), {"class_names": ["normal", "tumor"]})
    times = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        for batch in task.train_batches(epoch):
            task.train_step(batch)
        times.append(time.perf_counter() - t0)
    return task, times


def split(bags: list[SlideBag], n_test: int) -> tuple[list[SlideBag], list[SlideBag]]:
    """Train and test slides by the package's stratified split (seed 0; about ``n_test`` test slides, both classes)."""
    train, test = stratified_split([b.label for b in bags], n_test / len(bags), seed=0)
    return [bags[i] for i in train], [bags[i] for i in test]


def random_bags(n: int, dim: int, seed: int) -> list[SlideBag]:
    """Bags of random features with realistic sizes, for timing only."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = int(torch.randint(500, 6000, (1,), generator=g))
        out.append(SlideBag(f"r{i}", torch.randn(k, dim, generator=g), np.zeros((k, 2), np.int64),
                            torch.randint(0, 2, (k,), generator=g), i % 2, {}))
    return out


def epoch_timing(slides: list[SlideBag], repeats: int, n_random: int = 24) -> list[dict]:
    """Median seconds of a warm training epoch, 8 slides per step vs 1, runs interleaved (load noise hits both)."""
    rows = []
    for label, data in (("synthetic slides (tiny features, 64-d)", slides),
                        ("random 1024-d bags, 500-6000 patches", random_bags(n_random, 1024, 0))):
        per: dict[int, list[float]] = {8: [], 1: []}
        for _ in range(repeats):
            for spb in per:
                _, times = fit(data, train_cfg(batch_size=spb, epochs=2))
                per[spb].append(times[-1])  # the second epoch: allocator and caches warm
        ragged, single = statistics.median(per[8]), statistics.median(per[1])
        rows.append({"data": label, "slides": len(data), "patches": sum(len(b.features) for b in data), "repeats": repeats,
                     "ragged_8_per_step_s": round(ragged, 3), "one_per_step_s": round(single, 3), "speedup": round(single / ragged, 2)})
        print(rows[-1], flush=True)
    return rows


def save_preview(src: Path, dst: Path, width: int = 1536) -> None:
    """A downscaled copy of an overview PNG (the full-size one is megabytes; results stay small)."""
    from PIL import Image

    with Image.open(src) as im:
        im.thumbnail((width, width), Image.LANCZOS)
        im.save(dst, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_quick_options(p, "12 small slides with clear tumours, 1 seed, 40 epochs, 1 thread")
    p.add_argument("--keep", help="keep the work folder here (default: a temporary folder)")
    p.add_argument("--timing-only", action="store_true",
                   help="only redo the epoch timing, with the slides of --keep and the existing results JSON")
    args = p.parse_args()
    torch.set_num_threads(1 if args.quick else 2)
    # quick: smaller slides with make_slides' default (larger, full-contrast) tumours; 8 train slides, 2 steps per epoch
    n_slides, n_test, seeds, epochs = (12, 4, [0], 40) if args.quick else (40, 16, [0, 1, 2], 20)
    height, width, radius, contrast = (512, 768, (0.06, 0.11), 1.0) if args.quick else (768, 1024, (0.04, 0.08), 0.6)
    repeats, n_random = (1, 2) if args.quick else (5, 24)
    results = results_folder(args, "wsi_evidence")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="wsi_evidence_"))
    if args.timing_only:
        res = json.loads((results / "wsi_evidence.json").read_text())
        bags, _ = load_bags(work / "features", read_labels(work / "slides" / "labels.csv"))
        res["epoch_time"] = epoch_timing(split(bags, res["slides"]["test"])[0], repeats, n_random)
        (results / "wsi_evidence.json").write_text(json.dumps(res, indent=2) + "\n")
        (results / "wsi_evidence.md").write_text(render_md(res))
        return
    res: dict = {"machine": f"{machine_note()}; torch {torch.__version__}, {torch.get_num_threads()} threads",
                 "quick": args.quick,
                 "slides": {"n": n_slides, "test": n_test, "size": f"{height}x{width} level-0 px, mpp 0.5",
                            "tumour_radius": list(radius), "contrast": contrast},
                 # `fastmed wsi train`'s options as run here; each variant then sets its loss weights (VARIANTS)
                 "train_config": {k: v for k, v in dataclasses.asdict(train_cfg(epochs=epochs)).items()
                                  if k not in ("features", "labels", "out", "resume", "progress")}}
    t0 = time.perf_counter()
    make_slides(work / "slides", n_slides, seed=0, height=height, width=width, tumor_radius=radius, contrast=contrast)
    res["slides"]["generate_s"] = round(time.perf_counter() - t0, 1)

    opts = TileOptions(patch_size=64, mpp=0.5, mask_downsample=16)
    tiling = tile_folder(work / "slides", work / "tiles", opts, workers=2, overwrite=True, show_progress=False)
    verified = tile_folder(work / "slides", work / "tiles_v", TileOptions(**{**opts.__dict__, "verify": True}),
                           workers=2, overwrite=True, show_progress=False)
    res["tiling"] = {"tiles": tiling["tiles"], "coords_tiles_per_s": tiling["tiles_per_s"],
                     "read_every_tile_tiles_per_s": verified["tiles_per_s"], "workers": 2, "patch": "64 px at 0.5 mpp"}
    feats = extract_features(work / "tiles", work / "features", "tiny", device="cpu", overwrite=True, show_progress=False)
    res["features"] = {"encoder": "tiny", "patches": feats["patches"], "patches_per_s": feats["patches_per_s"]}

    bags, _ = load_bags(work / "features", read_labels(work / "slides" / "labels.csv"))
    train, test = split(bags, n_test)
    rows = []
    for name, weights in VARIANTS.items():
        runs = []
        for seed in seeds:
            task, _ = fit(train, train_cfg(seed=seed, epochs=epochs, **weights))
            runs.append(evaluate_bags(task.model, test, torch.device("cpu"), 0.5))
        keys = ["auc", "acc", "patch_auc_attention", "patch_auc_prob", "patch_auc_combined"]
        row = {"variant": name, **{k: round(statistics.median(r.get(k, float("nan")) for r in runs), 4) for k in keys},
               "per_seed_slide_auc": [round(r["auc"], 4) for r in runs]}
        rows.append(row)
        print(row, flush=True)
    res["training"] = {"train_slides": len(train), "test_slides": len(test), "epochs": epochs, "seeds": seeds,
                       "metric": "median over seeds, on test slides", "rows": rows}

    timing = epoch_timing(train, repeats, n_random)
    res["epoch_time"] = timing

    from fastmed.wsi.heatmap import render_slide
    from fastmed.wsi.train import predict_bags

    task, _ = fit(train, train_cfg(epochs=epochs))
    example = next(b for b in test if b.label == 1)
    heat = work / "heat"
    heat.mkdir(exist_ok=True)
    render_slide(example, predict_bags(task.model, [example], torch.device("cpu"))[0], heat, None, None, 1024, 0.5, 0.5)
    save_preview(heat / f"{example.slide_id}_overview.png", results / "wsi_heatmap_example.png")
    write_results(results, "wsi_evidence", res, render_md(res), work, keep=bool(args.keep))


def render_md(res: dict) -> str:
    tr, s = res["training"], res["slides"]
    lines = [
        "# wsi evidence (synthetic slides with known tumour regions)", "",
        f"{s['n']} slides {s['size']} (half tumour-positive; tumour radius {s['tumour_radius']} of the short side, "
        f"contrast {s['contrast']}); {tr['train_slides']} train / {tr['test_slides']} test slides; tiny encoder; "
        f"{tr['epochs']} epochs, 4 slides per step; {tr['metric']} (seeds {tr['seeds']}). {res['machine']}.", "",
        "| variant | slide AUC | slide acc | patch AUC attention | patch AUC patch prob | patch AUC combined | slide AUC per seed |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {r['variant']} | {r['auc']:.3f} | {r['acc']:.3f} | {r['patch_auc_attention']:.3f} | {r['patch_auc_prob']:.3f} | "
         f"{r['patch_auc_combined']:.3f} | {r['per_seed_slide_auc']} |" for r in tr["rows"]] + [
        "", "## Time per training epoch: ragged batches vs one slide per step", "",
        "Median of interleaved warm epochs (same model and losses; 1 slide/step makes 8x more optimizer steps).", "",
        "| data | slides | patches | 8 slides/step (s) | 1 slide/step (s) | speed-up |", "|---|---|---|---|---|---|",
    ] + [f"| {t['data']} | {t['slides']} | {t.get('patches', '')} | {t['ragged_8_per_step_s']} | {t['one_per_step_s']} | {t['speedup']}x |"
         for t in res["epoch_time"]] + [
        "", "## Throughput", "",
        f"Tiling ({res['tiling']['patch']}, {res['tiling']['workers']} worker processes, {res['tiling']['tiles']} tiles): "
        f"{res['tiling']['coords_tiles_per_s']} tiles/s (coordinates, tissue, labels), "
        f"{res['tiling']['read_every_tile_tiles_per_s']} tiles/s when every tile is also read. "
        f"Features (tiny encoder, CPU): {res['features']['patches_per_s']} patches/s.", "",
        "![example heatmap](wsi_heatmap_example.png)", "",
        "Overview of one test slide: thumbnail, attention (percentile), patch probability, combined.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
