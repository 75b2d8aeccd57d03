"""Ablation of the polyp generation method on the synthetic data (CPU-sized).

For every seed:

1. (once) an *independent* classifier (seed 1000, trained on the originals
   only) that judges class preservation and supplies the evaluation features;
2. two generators with the same budget: (b) without the distribution losses
   (``w_dist1 = w_dist2 = 0``), (c) with them; each writes one generated image
   per training image (``fastmed polyp generate``);
3. Models-Genesis pre-training of the recognizer encoder on the training images;
4. the recognizer trained on (a) the originals, (a2) the originals for twice
   the epochs (the number of updates of b and c), (b) + generated without,
   (c) + generated with the distribution losses, each from random init and
   from the pre-trained encoder; accuracy and macro-F1 on ``test_shift``
   (illumination/colour shift never seen in training) and ``test``.

Generated-set quality (per seed, per generator): class agreement of the
independent classifier with the source class; feature spread (mean distance
of L2-normalised features to their class mean, generated vs real); the
debiased Sinkhorn divergence between real and generated features per class
(larger = further from the real distribution); mean absolute pixel change
from the source image.

    .venv/bin/python benchmarks/polyp_ablation.py [--seeds 0,1] [--size small] [--quick] [--out DIR]

Writes ``benchmarks/results/polyp_ablation.json`` and ``.md`` (``--quick``: ``polyp_ablation_quick.*`` in a
temporary folder, or ``--out``; its work folder is temporary too). Everything
runs through the same Python API as the CLI (``run_augment``,
``run_generate``, ``run_pretrain``, ``run_train``).
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

import numpy as np
import torch

from fastmed.cfg.polyp import PolypAugmentConfig, PolypGenerateConfig, PolypPretrainConfig, PolypTrainConfig
from fastmed.data.synthetic import make_synthetic
from fastmed.engine.checkpoint import load_model
from fastmed.engine.classify import evaluate_class_folder, predict_paths
from fastmed.engine.training_run import RunSummary
from fastmed.kernels import sinkhorn_divergence
from fastmed.nets.classifiers import feature_extractor
from fastmed.polyp.augment import run_augment
from fastmed.polyp.generate import run_generate
from fastmed.polyp.image_sets import imagenet_normalize, load_class_folders
from fastmed.polyp.pretrain import run_pretrain
from fastmed.polyp.train import run_train
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder  # benchmarks/quick.py

VARIANTS = {"a": "original", "a2": "original, 2x epochs (the updates of b, c)", "b": "+ generated, no distribution losses",
            "c": "+ generated, with distribution losses"}


def _train(data: Path, out: Path, seed: int, args, extra: list[str], pretrained: str | None, epoch_factor: int = 1) -> RunSummary:
    return run_train(PolypTrainConfig(data=str(data), extra_data=extra, pretrained=pretrained, arch=args.arch,
                                      epochs=args.epochs * epoch_factor, batch_size=32, lr=2e-3, image_size=args.image_size,
                                      out=str(out), seed=seed, device="cpu", progress=False))


def _features(model: torch.nn.Module, x01: torch.Tensor) -> torch.Tensor:
    body, _ = feature_extractor(model)
    with torch.no_grad():
        return torch.nn.functional.normalize(torch.cat([body(imagenet_normalize(x01[i:i + 64])) for i in range(0, len(x01), 64)]), dim=1)


def generated_quality(gen_dir: Path, data: Path, judge: torch.nn.Module, judge_ckpt: dict, size: int) -> dict:
    """Class agreement, feature spread, OT distance to the real set, pixel change (see module doc)."""
    names = list(judge_ckpt["class_names"])
    real = load_class_folders(data, size, names)
    fake = load_class_folders(gen_dir, size, names)
    paths, probs, _ = predict_paths(judge, judge_ckpt, fake.paths, torch.device("cpu"))
    label_of = {p: int(y) for p, y in zip(fake.paths, fake.labels)}
    agree = float(np.mean([probs[i].argmax() == label_of[p] for i, p in enumerate(paths)]))
    fr, ff = _features(judge, real.images), _features(judge, fake.images)
    spread_r, spread_f, ot = [], [], []
    for k in range(len(names)):
        r, f = fr[real.labels == k], ff[fake.labels == k]
        spread_r.append(float((r - r.mean(0)).norm(dim=1).mean()))
        spread_f.append(float((f - f.mean(0)).norm(dim=1).mean()))
        ot.append(float(sinkhorn_divergence(r[None], f[None], blur=0.05, diameter=2.0)[0]))
    by_stem = {p.stem: i for i, p in enumerate(real.paths)}
    change = [float((fake.images[j] - real.images[by_stem[p.stem.rsplit("_g", 1)[0]]]).abs().mean())
              for j, p in enumerate(fake.paths) if p.stem.rsplit("_g", 1)[0] in by_stem]
    return {"class_agreement": agree, "spread_generated": float(np.mean(spread_f)), "spread_real": float(np.mean(spread_r)),
            "ot_to_real": float(np.mean(ot)), "pixel_change": float(np.mean(change))}


def run_seed(seed: int, data: Path, work: Path, args, judge: torch.nn.Module, judge_ckpt: dict) -> dict:
    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    gens, quality = {}, {}
    for v, (w1, w2) in {"b": (0.0, 0.0), "c": (args.w_dist, args.w_dist)}.items():
        aug = run_augment(PolypAugmentConfig(data=str(data), epochs=args.gen_epochs, steps_per_epoch=args.gen_steps, per_class=4,
                                             image_size=args.image_size, w_dist1=w1, w_dist2=w2, margin=args.margin,
                                             out=str(work / f"augment_{v}"), seed=seed, device="cpu", progress=False))
        gen = run_generate(PolypGenerateConfig(weights=str(aug.weights), data=str(data), out=str(work / f"generated_{v}"),
                                               seed=seed, device="cpu", progress=False))
        gens[v] = gen["out"]
        quality[v] = generated_quality(Path(gen["out"]), data, judge, judge_ckpt, args.image_size)
        print(f"[seed {seed}] generator {v}: {quality[v]}", flush=True)
    pre = run_pretrain(PolypPretrainConfig(data=str(data), arch=args.arch, epochs=args.pre_epochs, batch_size=32,
                                           image_size=args.image_size, lr=2e-3, out=str(work / "pretrain"), seed=seed,
                                           device="cpu", progress=False))
    scores = {}
    for v in VARIANTS:
        for pretrained in (None, str(pre.weights)):
            if args.quick and pretrained and v != "a":  # --quick: the pre-trained encoder in variant (a) only
                continue
            name = f"{v}{'+pre' if pretrained else ''}"
            run = _train(data, work / f"train_{name}", seed, args, [gens[v]] if v in gens else [], pretrained, 2 if v == "a2" else 1)
            model, ckpt = load_model(run.weights)
            scores[name] = {split: {k: evaluate_class_folder(model, ckpt, data / split, torch.device("cpu"))[k] for k in ("acc", "macro_f1")}
                            for split in ("test_shift", "test")}
            print(f"[seed {seed}] {name}: {scores[name]}", flush=True)
    return {"seed": seed, "scores": scores, "generated": quality, "pretrain_val_mse": pre.metrics["val/mse"],
            "pretrain_val_mse_identity": pre.metrics["val/mse_identity"], "seconds": round(time.perf_counter() - t0, 1)}


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def write_results(per_seed: list[dict], args, meta: dict, results: Path, stem: str) -> None:
    (results / f"{stem}.json").write_text(json.dumps({"meta": meta, "seeds": per_seed}, indent=1))
    names = list(per_seed[0]["scores"])
    lines = [f"# polyp ablation ({meta['size']} synthetic set, {len(per_seed)} seed(s): {meta['seeds']}, CPU)", "",
             f"Recognizer {args.arch} at {args.image_size}px, {args.epochs} epochs; generators {args.gen_epochs}x{args.gen_steps} updates "
             f"(per_class 4, w_dist {args.w_dist}, margin {args.margin}); pre-training {args.pre_epochs} epochs. Mean ± sd over seeds.", "",
             "| training data | pre-trained | test_shift acc | test_shift macro-F1 | test acc | test macro-F1 |", "|---|---|---|---|---|---|"]
    for name in names:
        v = name.split("+")[0]
        col = lambda split, k: _ms([s["scores"][name][split][k] for s in per_seed])  # noqa: E731
        lines.append(f"| ({v}) {VARIANTS[v]} | {'yes' if '+pre' in name else 'no'} | {col('test_shift', 'acc')} | "
                     f"{col('test_shift', 'macro_f1')} | {col('test', 'acc')} | {col('test', 'macro_f1')} |")
    lines += ["", "Generated sets (judge: an independently trained classifier; features L2-normalised):", "",
              "| generator | class agreement | feature spread (generated / real) | Sinkhorn div. to real | mean abs pixel change |",
              "|---|---|---|---|---|"]
    for v in ("b", "c"):
        q = lambda k: _ms([s["generated"][v][k] for s in per_seed])  # noqa: E731
        lines.append(f"| ({v}) {VARIANTS[v]} | {q('class_agreement')} | {q('spread_generated')} / {q('spread_real')} | "
                     f"{q('ot_to_real')} | {q('pixel_change')} |")
    lines += ["", f"Pre-training restoration MSE: {_ms([s['pretrain_val_mse'] for s in per_seed])} "
              f"(corrupted input: {_ms([s['pretrain_val_mse_identity'] for s in per_seed])}).",
              "", f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['note']}; total {meta['seconds']} s."]
    (results / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--size", default="small", choices=["tiny", "small", "demo", "large"])
    ap.add_argument("--work", help="work folder (default runs/polyp_ablation; with --quick a temporary folder)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--gen-epochs", type=int, default=2)
    ap.add_argument("--gen-steps", type=int, default=20)
    ap.add_argument("--pre-epochs", type=int, default=4)
    ap.add_argument("--w-dist", type=float, default=1.0)
    ap.add_argument("--margin", type=float, default=0.1)
    add_quick_options(ap, "tiny data, 1 seed, recognizers 3 epochs (pre-trained: variant a only), generators 2 updates, "
                          "pre-training 1 epoch, 1 thread")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.size, args.epochs, args.gen_epochs, args.gen_steps, args.pre_epochs = "0", "tiny", 3, 1, 2, 1
    torch.set_num_threads(1 if args.quick else 2)
    results = results_folder(args, "polyp_ablation")
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.work or (tempfile.mkdtemp(prefix="polyp_ablation_") if args.quick else "runs/polyp_ablation"))
    t0 = time.perf_counter()
    data = make_synthetic(work / "data", seed=0, size=args.size, parts=["polyp"]) / "polyp"
    judge, judge_ckpt = load_model(_train(data, work / "judge", 1000, args, [], None).weights)
    stem = "polyp_ablation_quick" if args.quick else "polyp_ablation"
    per_seed = []
    for s in seeds:  # results are rewritten after every seed, so a cut-short run keeps what it finished
        per_seed.append(run_seed(s, data, work / f"seed{s}", args, judge, judge_ckpt))
        meta = {"size": args.size, "seeds": [r["seed"] for r in per_seed], "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
                "torch": torch.__version__, "note": machine_note(),
                "seconds": round(time.perf_counter() - t0, 1), "args": vars(args)}
        write_results(per_seed, args, meta, results, stem)
    print((results / f"{stem}.md").read_text())
    if args.quick and not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
