"""Ablation of the polyp generation method on the synthetic data (CPU-sized), paired by seed.

Once: the synthetic set (``small``: 60 training images per class) and an
*independent* judge (resnet18, seed 1000, trained on the originals only, with
the classic augmentation) that measures the generated sets.

For every seed:

1. two generators with the same budget (``fastmed polyp augment`` defaults,
   ``--gen-epochs x --gen-steps`` updates): (b) without the distribution
   losses (``w_dist1 = w_dist2 = 0``), (c) with them; each writes one
   generated image per training image (``fastmed polyp generate --judge``
   with the independent judge: its ``summary.json`` gives the generated-set
   measures of ``fastmed.polyp.gen_metrics``);
2. Models-Genesis pre-training of the recognizer encoder: on the originals
   for (a) and (d), on the originals + that row's generated images
   (``pretrain --extra-data``) for (b) and (c);
3. the recognizer (resnet18) trained on (a) the originals, (b) + generated
   without, (c) + generated with the distribution losses, (d) the originals
   with classic augmentation (flips, 90-degree rotations, shifts,
   colour/brightness/contrast jitter: ``polyp train --augment``; rows a-c
   train without it), each from random init and from its pre-trained encoder.
   Every row gets the same number of recognizer updates: (a) and (d) train
   twice the epochs of (b) and (c), whose training sets are twice as large.
   Accuracy and macro-F1 on ``test`` and on ``test_shift`` (an
   illumination/colour shift never seen in training); paired differences
   (per seed) against (a) and (d).

    .venv/bin/python benchmarks/polyp_ablation.py [--seeds 0,1,2,3,4] [--quick] [--out DIR] [--work DIR]

Writes ``benchmarks/results/polyp_ablation.json``, ``.md`` and the seed-0
samples grids of both generators (``polyp_ablation_samples_{b,c}.png``);
``--quick`` writes ``polyp_ablation_quick.*`` into a temporary folder (or
``--out``). The work folder (default ``runs/polyp_ablation``) caches the data,
the judge and every finished generator, pre-training and recognizer run, so an
interrupted run resumes where it stopped. Everything runs through the CLI's
Python API (``run_augment``, ``run_generate``, ``run_pretrain``, ``run_train``).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from fastmed.cfg.polyp import PolypAugmentConfig, PolypGenerateConfig, PolypPretrainConfig, PolypTrainConfig
from fastmed.data.synthetic import make_synthetic
from fastmed.engine.checkpoint import load_model
from fastmed.engine.classify import evaluate_class_folder
from fastmed.polyp.augment import run_augment
from fastmed.polyp.generate import run_generate
from fastmed.polyp.pretrain import run_pretrain
from fastmed.polyp.train import run_train
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder  # benchmarks/quick.py

ROWS = {"a": "originals", "b": "+ generated, no distribution losses", "c": "+ generated, with distribution losses",
        "d": "originals + classic augmentation"}
MEASURES = ("pixel_change", "noise_diversity", "spread_generated", "spread_real", "sinkhorn_to_real", "judge_agreement",
            "judge_real_accuracy", "judge_agreement_ratio")
COMMON = {"device": "cpu", "progress": False}


def _train(data: Path, out: Path, seed: int, args, extra: list[str], pretrained: str | None, epochs: int, augment: bool) -> Path:
    """A recognizer run (reused when ``out`` holds a finished one); returns its best weights."""
    weights = out / "weights" / "best.pt"
    if not (out / "summary.json").exists():
        run_train(PolypTrainConfig(data=str(data), extra_data=extra, pretrained=pretrained, arch=args.arch, epochs=epochs,
                                   batch_size=32, lr=2e-3, image_size=args.image_size, augment=augment, out=str(out),
                                   seed=seed, overwrite=out.exists(), **COMMON))
    return weights


def _generator(v: str, data: Path, work: Path, seed: int, args, judge: Path) -> dict:
    """Train generator ``v`` (b: no distribution losses, c: with them) and write its set; returns generate's summary."""
    gen_dir = work / f"generated_{v}"
    if not (gen_dir / "summary.json").exists():
        dist = {"w_dist1": 0.0, "w_dist2": 0.0} if v == "b" else {}  # (c): the default weights
        aug = run_augment(PolypAugmentConfig(data=str(data), epochs=args.gen_epochs, steps_per_epoch=args.gen_steps,
                                             image_size=args.image_size, **dist, out=str(work / f"augment_{v}"),
                                             seed=seed, overwrite=(work / f"augment_{v}").exists(), **COMMON))
        shutil.rmtree(gen_dir, ignore_errors=True)
        run_generate(PolypGenerateConfig(weights=str(aug.weights), data=str(data), out=str(gen_dir), judge=str(judge),
                                         seed=seed, **COMMON))
    return json.loads((gen_dir / "summary.json").read_text())


def _pretrain(data: Path, out: Path, seed: int, args, extra: list[str]) -> str:
    if not (out / "summary.json").exists():
        run_pretrain(PolypPretrainConfig(data=str(data), extra_data=extra, arch=args.arch, epochs=args.pre_epochs, batch_size=32,
                                         image_size=args.image_size, lr=2e-3, out=str(out), seed=seed,
                                         overwrite=out.exists(), **COMMON))
    return str(out / "weights" / "best.pt")


def run_seed(seed: int, data: Path, work: Path, args, judge: Path) -> dict:
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    gens = {v: _generator(v, data, work, seed, args, judge) for v in ("b", "c")}
    for v, g in gens.items():
        print(f"[seed {seed}] generator {v}: {g['metrics']}", flush=True)
    extra = {"a": [], "b": [gens["b"]["out"]], "c": [gens["c"]["out"]], "d": []}
    pre = {"a": _pretrain(data, work / "pretrain", seed, args, [])}
    pre.update({v: _pretrain(data, work / f"pretrain_{v}", seed, args, extra[v]) for v in ("b", "c")})
    pre["d"] = pre["a"]
    scores = {}
    for v in ROWS:
        for with_pre in (False, True):
            if args.quick and with_pre and v not in ("a", "c"):
                continue
            name = f"{v}{'+pre' if with_pre else ''}"
            epochs = args.epochs * (2 if v in ("a", "d") else 1)  # equal updates: (b), (c) see twice the images per epoch
            weights = _train(data, work / f"train_{name}", seed, args, extra[v], pre[v] if with_pre else None, epochs, v == "d")
            model, ckpt = load_model(weights)
            scores[name] = {split: {k: evaluate_class_folder(model, ckpt, data / split, torch.device("cpu"))[k] for k in ("acc", "macro_f1")}
                            for split in ("test_shift", "test")}
            print(f"[seed {seed}] {name}: {scores[name]}", flush=True)
    return {"seed": seed, "scores": scores, "generated": {v: g["metrics"] for v, g in gens.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def paired(per_seed: list[dict], x: str, y: str, split: str, key: str) -> list[float]:
    """Per-seed differences ``x - y`` of one score."""
    return [s["scores"][x][split][key] - s["scores"][y][split][key] for s in per_seed if x in s["scores"] and y in s["scores"]]


def targets(per_seed: list[dict], pre: str) -> list[str]:
    """The issue's three targets for one pre-training setting (``""`` or ``"+pre"``), each met or not."""
    ca = paired(per_seed, f"c{pre}", f"a{pre}", "test_shift", "acc")
    cb = paired(per_seed, f"c{pre}", f"b{pre}", "test_shift", "acc")
    cd = paired(per_seed, f"c{pre}", f"d{pre}", "test_shift", "acc")
    out = []
    if ca:
        out.append(f"(c) − (a) test_shift acc {_ms(ca)} (target ≥ +0.020): {'met' if statistics.mean(ca) >= 0.02 else 'NOT met'}")
    if len(cb) > 1:
        sd = statistics.stdev(cb)
        out.append(f"(c) − (b) {_ms(cb)} (target: mean > its sd {sd:.3f}): {'met' if statistics.mean(cb) > sd else 'NOT met'}")
    if cd:
        out.append(f"(c) − (d) {_ms(cd)} (target ≥ 0): {'met' if statistics.mean(cd) >= 0 else 'NOT met'}")
    return out


def markdown(per_seed: list[dict], args, meta: dict) -> str:
    names = list(per_seed[0]["scores"])
    lines = [f"# polyp ablation ({meta['size']} synthetic set, {len(per_seed)} seed(s): {meta['seeds']}, CPU)", "",
             f"Recognizer {args.arch} at {args.image_size}px: {args.epochs} epochs for (b), (c) (originals + one generated image "
             f"each), {2 * args.epochs} for (a), (d) (same number of updates); no augmentation except in (d). Generators: "
             f"`polyp augment` defaults, {args.gen_epochs}x{args.gen_steps} updates. Pre-training {args.pre_epochs} epochs "
             "(on originals + generated images for (b), (c)). Mean ± sd over seeds.", "",
             "| training data | pre-trained | test_shift acc | test_shift macro-F1 | test acc | test macro-F1 |", "|---|---|---|---|---|---|"]
    for name in names:
        col = lambda split, k: _ms([s["scores"][name][split][k] for s in per_seed])  # noqa: E731
        lines.append(f"| ({name[0]}) {ROWS[name[0]]} | {'yes' if '+pre' in name else 'no'} | {col('test_shift', 'acc')} | "
                     f"{col('test_shift', 'macro_f1')} | {col('test', 'acc')} | {col('test', 'macro_f1')} |")
    lines += ["", "Paired differences (per seed, then mean ± sd):", "",
              "| difference | pre-trained | test_shift acc | test_shift macro-F1 | test acc | test macro-F1 |", "|---|---|---|---|---|---|"]
    for x, y in (("b", "a"), ("c", "a"), ("d", "a"), ("b", "d"), ("c", "d"), ("c", "b")):
        for pre in ("", "+pre"):
            if f"{x}{pre}" not in names or f"{y}{pre}" not in names:
                continue
            cells = [_ms(paired(per_seed, f"{x}{pre}", f"{y}{pre}", split, k)) for split in ("test_shift", "test") for k in ("acc", "macro_f1")]
            lines.append(f"| ({x}) − ({y}) | {'yes' if pre else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", "Targets (test_shift accuracy):", ""]
    lines += [f"- {'pre-trained' if pre else 'random init'}: {t}" for pre in ("", "+pre") for t in targets(per_seed, pre)]
    lines += ["", "Generated sets (one image per training image; judge: the independent resnet18; features L2-normalised):", "",
              "| generator | pixel change | noise diversity | spread generated / real | Sinkhorn div. to real | judge agreement "
              "| judge acc. on real test | ratio |", "|---|---|---|---|---|---|---|---|"]
    for v in ("b", "c"):
        q = lambda k: _ms([s["generated"][v][k] for s in per_seed])  # noqa: E731
        lines.append(f"| ({v}) {ROWS[v]} | {q('pixel_change')} | {q('noise_diversity')} | {q('spread_generated')} / {q('spread_real')} "
                     f"| {q('sinkhorn_to_real')} | {q('judge_agreement')} | {q('judge_real_accuracy')} | {q('judge_agreement_ratio')} |")
    lines += ["", "Seed-0 samples (a source, then four noise draws): `polyp_ablation_samples_b.png`, `polyp_ablation_samples_c.png`.",
              "", f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['note']}; total {meta['seconds']} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--size", default="small", choices=["tiny", "small", "demo", "large"])
    ap.add_argument("--work", help="work folder, reused between runs (default runs/polyp_ablation; with --quick a temporary folder)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4, help="recognizer epochs of (b), (c); (a), (d) get twice as many")
    ap.add_argument("--gen-epochs", type=int, default=2)
    ap.add_argument("--gen-steps", type=int, default=50)
    ap.add_argument("--pre-epochs", type=int, default=3)
    add_quick_options(ap, "tiny data, 1 seed, recognizers 2 epochs (pre-trained: rows a and c only), generators 2 updates, "
                          "pre-training 1 epoch, 1 thread")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.size, args.epochs, args.gen_epochs, args.gen_steps, args.pre_epochs = "0", "tiny", 2, 1, 2, 1
    torch.set_num_threads(1)
    results = results_folder(args, "polyp_ablation")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work or (tempfile.mkdtemp(prefix="polyp_ablation_") if args.quick else "runs/polyp_ablation"))
    t0 = time.perf_counter()
    data = make_synthetic(work / "data", seed=0, size=args.size, parts=["polyp"], image_size=args.image_size) / "polyp"
    judge = _train(data, work / "judge", 1000, args, [], None, 2 * args.epochs, True)
    stem = "polyp_ablation_quick" if args.quick else "polyp_ablation"
    per_seed = []
    for s in seeds:  # results are rewritten after every seed, so a cut-short run keeps what it finished
        per_seed.append(run_seed(s, data, work / f"seed{s}", args, judge))
        meta = {"size": args.size, "seeds": [r["seed"] for r in per_seed], "machine": f"{platform.machine()} CPU, 1 thread",
                "torch": torch.__version__, "note": machine_note(), "seconds": round(time.perf_counter() - t0, 1), "args": vars(args)}
        (results / f"{stem}.json").write_text(json.dumps({"meta": meta, "seeds": per_seed}, indent=1) + "\n")
        (results / f"{stem}.md").write_text(markdown(per_seed, args, meta))
        if s == seeds[0]:
            for v in ("b", "c"):
                shutil.copyfile(work / f"seed{s}" / f"generated_{v}" / "samples.png", results / f"{stem}_samples_{v}.png")
    print((results / f"{stem}.md").read_text())
    if args.quick and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
