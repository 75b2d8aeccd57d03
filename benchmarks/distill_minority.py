"""Evidence for the distill prior on imbalanced data: does a prior favouring the weak classes raise their recall?

Some classes of the training set are cut to 10 % (``fastmed distill train
--weak-classes ... --weak-train-fraction 0.1``; the same draw for every seed):
digits 7, 8, 9 of scikit-learn's digits; ``hyperplastic`` of synthetic polyps.
Validation stays balanced. Steps, per dataset:

1. Teacher: ResNet-18 trained on the cut set by ``distill train`` (labels only).
2. Cache: ``VIEWS`` views of every cut training image (view 0 plain, the others
   augmented as in ``distill train``, strength 1), with the teacher's logits and
   pooled features on each; the validation images, plain.
3. Students: a small CNN (``SmallStudent``, 3 conv blocks, 64-d features)
   trained on the cached views with ``fastmed.distill.objective.DistillObjective``
   (teacher and student see the same view), precise BN, scored after the last
   epoch (no selection). Variants (all with the cross-entropy on labels unless
   said)::

       ce                 labels only
       kd                 + Hinton KD (T = 4)                          (the baseline of the paired differences)
       l2_features        + L2 feature matching through a learned projection (64 -> teacher's 512)
       mi                 + IIC mutual information (no prior)
       mi_prior           + MI with the learned Gaussian prior (fitted to the student's marginal)
       mi_prior_balanced  + MI, prior pulled towards the uniform distribution (--prior-target balanced)
       mi_prior_weak      + MI, prior pulled towards π with the cut classes at 2x (--prior-target weak)
       mi_only            MI with the learned prior, no labels, no KD; Hungarian class matching

Metrics on the balanced validation split: balanced accuracy, recall of the cut
classes (mean over them); 5 seeds, paired differences against ``kd``.

    .venv/bin/python benchmarks/distill_minority.py                    # both datasets, seeds 0-4
    .venv/bin/python benchmarks/distill_minority.py --dataset polyp    # one; merged into the existing JSON
    .venv/bin/python benchmarks/distill_minority.py --report           # distill_minority.md from the JSON
    .venv/bin/python benchmarks/distill_minority.py --quick            # smoke run: digits at 8 px, 1 seed, 2 epochs

writes ``benchmarks/results/distill_minority.{json,md}`` (``--quick``: a temporary folder, or ``--out``).

The students are not ``distill train``'s MobileNet: on the shared 2-core CPU
one MobileNetV3-small step took 1.4 s (batch 128, load 10), too slow for
8 variants x 5 seeds x 2 datasets. The losses, the cut, the target prior and the
metrics are fastmed's; ``tests/distill/test_cli.py`` runs the same options
through the CLI.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder, write_results  # benchmarks/quick.py

FRACTION = 0.1  # the cut classes keep this fraction of their training images
VIEWS = 4
SETTINGS = {
    "digits": dict(cut=("7", "8", "9"), image_size=16, teacher_epochs=8, teacher_batch=64, epochs=20, batch=64,
                   lr=3e-3, flips=False),
    "polyp": dict(cut=("hyperplastic",), image_size=32, per_class={"train": 100, "val": 40}, teacher_epochs=15,
                  teacher_batch=32, epochs=30, batch=32, lr=3e-3, flips=True),
}
QUICK = dict(SETTINGS["digits"], image_size=8, teacher_epochs=1, epochs=2, views=1)
VARIANTS = {
    "ce": dict(),
    "kd": dict(kd_weight=1.0),
    "l2_features": dict(feature_weight=1.0),
    "mi": dict(mi_weight=1.0, prior=False),
    "mi_prior": dict(mi_weight=1.0),
    "mi_prior_balanced": dict(mi_weight=1.0, target="balanced"),
    "mi_prior_weak": dict(mi_weight=1.0, target="weak"),
    "mi_only": dict(ce_weight=0.0, mi_weight=1.0),
}
BASELINE = "kd"
FOCUS, FOCUS_AGAINST = "mi_prior_weak", ("ce", "mi_prior", "mi_prior_balanced")  # extra paired rows in the .md
WEAK_BOOST = 2.0
METRICS = ("balanced_acc", "recall_cut", "acc")


class SmallStudent(nn.Module):
    """``(B, 3, S, S)`` → ``((B, 64) pooled features, (B, C) logits)``: 3 conv-BN-ReLU blocks (32, 64, 64 channels,
    the last two with stride 2), global average pooling, a linear head."""

    def __init__(self, num_classes: int):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.body = nn.Sequential(block(3, 32, 1), block(32, 64, 2), block(64, 64, 2), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(1))
        self.head = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.body(x)
        return features, self.head(features)


def load_cut_data(name: str, setting: dict, work: Path):
    """``(data source for distill train, LabelledImages with the cut applied, cut class indices)``."""
    from fastmed.distill.data import class_indices, cut_classes, load_labelled_images

    source = "digits"
    if name == "polyp":
        from fastmed.data.synthetic.polyp import make_polyp_dataset

        source = str(make_polyp_dataset(work / "polyp", setting["per_class"], seed=0, size=setting["image_size"]))
    data = load_labelled_images(source)
    cut = class_indices("weak-classes", ",".join(setting["cut"]), data.class_names)
    return source, data.with_train_subset(cut_classes(data.labels("train"), cut, FRACTION)), cut


def train_teacher(source: str, setting: dict, work: Path):
    from fastmed.cfg.distill import DistillTrainConfig
    from fastmed.distill.train import load_teacher, run_train

    cfg = DistillTrainConfig(data=source, arch="resnet18", kd_weight=0.0, mi_weight=0.0,
                             image_size=setting["image_size"], epochs=setting["teacher_epochs"],
                             batch_size=setting["teacher_batch"], lr=2e-3, out=str(work / "teacher"), device="cpu",
                             progress=False, weak_classes=",".join(setting["cut"]), weak_train_fraction=FRACTION)
    cfg.validate()
    run = run_train(cfg)
    return load_teacher(str(run.last_weights), torch.device("cpu")), run.history[-1]


@torch.no_grad()
def cache_views(data, teacher, setting: dict, views: int) -> dict[str, torch.Tensor]:
    """Training views ``x (V·N, 3, S, S)`` (view v of image i at ``v·N + i``), labels ``y (N,)``, the teacher's
    ``logits (V·N, C)`` and ``features (V·N, F_t)``; plain validation ``val_x``, ``val_y``."""
    from fastmed.distill.features import FeatureTap
    from fastmed.distill.views import view_transform

    size, flips = setting["image_size"], setting["flips"]
    mean, std = teacher.normalization["mean"], teacher.normalization["std"]
    plain, augmented = (view_transform(size, s, mean, std, flips) for s in (0.0, 1.0))
    torch.manual_seed(0)
    xs = [torch.stack([x for x, _ in data.dataset("train", plain if v == 0 else augmented)]) for v in range(views)]
    x = torch.cat(xs)
    tap = FeatureTap(teacher.model)
    logits, features = [], []
    for chunk in x.split(256):
        logits.append(teacher.model(chunk).float())
        features.append(tap.features.float())
    tap.remove()
    val_x = torch.stack([v for v, _ in data.dataset("val", plain)])
    return {"x": x, "y": torch.as_tensor(data.labels("train")), "logits": torch.cat(logits),
            "features": torch.cat(features), "val_x": val_x, "val_y": torch.as_tensor(data.labels("val"))}


def train_student(variant: dict, cache: dict, cut: list[int], num_classes: int, setting: dict, seed: int) -> dict:
    """Train one student on the cached views; its validation metrics and diagnostics."""
    from fastmed.distill.metrics import class_recalls, hungarian_matching
    from fastmed.distill.objective import DistillObjective
    from fastmed.distill.prior_target import target_distribution
    from fastmed.engine.precise_bn import recompute_bn_stats

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    n, views = len(cache["y"]), len(cache["x"]) // len(cache["y"])
    student = SmallStudent(num_classes)
    target = target_distribution(variant.get("target", "none"), num_classes, cut, WEAK_BOOST)
    objective = DistillObjective(num_classes, variant.get("ce_weight", 1.0), variant.get("kd_weight", 0.0), 4.0,
                                 variant.get("mi_weight", 0.0), variant.get("prior", True), 1.0, 0.1, target, 1.0,
                                 variant.get("feature_weight", 0.0), (64, cache["features"].shape[1]))
    opt = torch.optim.AdamW([{"params": student.parameters(), "weight_decay": 1e-4},
                             {"params": objective.parameters(), "weight_decay": 0.0}], lr=setting["lr"])
    steps_per_epoch = max(1, n // setting["batch"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=setting["epochs"] * steps_per_epoch)
    student.train()
    objective.train()
    for _ in range(setting["epochs"]):
        rows = torch.randint(views, (n,), generator=g) * n + torch.arange(n)  # one random view per image
        order = rows[torch.randperm(n, generator=g)]
        for b in range(steps_per_epoch):
            idx = order[b * setting["batch"]:(b + 1) * setting["batch"]]
            features, logits = student(cache["x"][idx])
            out = objective(logits, cache["y"][idx % n], cache["logits"][idx], features, cache["features"][idx])
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            sched.step()
    recompute_bn_stats(student, ((cache["x"][order[i:i + 256]],) for i in range(0, n, 256)), torch.device("cpu"))
    student.eval()
    with torch.no_grad():
        probs = torch.softmax(student(cache["val_x"])[1], 1)
    pred, val_y = probs.argmax(1), cache["val_y"]
    if variant.get("ce_weight", 1.0) == 0 and variant.get("kd_weight", 0.0) == 0:
        class_of = hungarian_matching(pred, val_y, num_classes)
        pred, probs = class_of[pred], probs[:, torch.argsort(class_of)]
    recalls = class_recalls(pred, val_y, num_classes)
    res = {"balanced_acc": float(recalls.nanmean()), "recall_cut": float(recalls[cut].mean()),
           "acc": float((pred == val_y).float().mean()),
           "val_prob_mass_cut": float(probs[:, cut].sum(1).mean())}  # diagnostic: the mass the student puts on them
    if objective.mi is not None and objective.mi.prior is not None:
        with torch.no_grad():
            res["prior_mass_cut"] = float(objective.mi.prior.eval()()[cut].sum())
    return res


def paired(values: list[float], base: list[float]) -> dict:
    d = [a - b for a, b in zip(values, base)]
    return {"mean": statistics.mean(d), "sd": statistics.stdev(d) if len(d) > 1 else 0.0, "per_seed": d}


def run_dataset(name: str, setting: dict, seeds: list[int], work: Path) -> dict:
    t0 = time.perf_counter()
    source, data, cut = load_cut_data(name, setting, work)
    teacher, last = train_teacher(source, setting, work)
    num_classes = len(data.class_names)
    cache = cache_views(data, teacher, setting, setting.get("views", VIEWS))
    from fastmed.distill.metrics import class_recalls

    with torch.no_grad():
        t_pred = teacher.model(cache["val_x"]).argmax(1)
    t_rec = class_recalls(t_pred, cache["val_y"], num_classes)
    counts = torch.bincount(cache["y"], minlength=num_classes).tolist()
    res = {"dataset": name, "cut_classes": list(setting["cut"]), "fraction": FRACTION, "train_counts": counts,
           "val_images": len(cache["val_y"]), "setting": {k: v for k, v in setting.items() if k != "per_class"},
           "teacher": {"arch": "resnet18", "epochs": setting["teacher_epochs"], "val_acc": last["val/acc"],
                       "balanced_acc": float(t_rec.nanmean()), "recall_cut": float(t_rec[cut].mean())},
           "seeds": seeds, "variants": {}}
    print(f"[{name}] teacher balanced acc {res['teacher']['balanced_acc']:.3f}, cut recall "
          f"{res['teacher']['recall_cut']:.3f}; train counts {counts} ({time.perf_counter() - t0:.0f} s)", flush=True)
    for vname, variant in VARIANTS.items():
        runs = []
        for seed in seeds:
            t1 = time.perf_counter()
            runs.append(train_student(variant, cache, cut, num_classes, setting, seed))
            print(f"[{name}] {vname} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in runs[-1].items())
                  + f" ({time.perf_counter() - t1:.0f} s)", flush=True)
        res["variants"][vname] = {k: [r[k] for r in runs] for k in runs[0]}
    base = res["variants"][BASELINE]
    for v in res["variants"].values():
        v["vs_kd"] = {m: paired(v[m], base[m]) for m in METRICS}
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    return res


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def render_md(res: dict) -> str:
    lines = ["# distill_minority: a prior favouring the weak classes on imbalanced data", "",
             "Cut classes keep 10 % of their training images; validation balanced. Students: a small CNN on cached "
             "teacher views (see benchmarks/distill_minority.py). Mean ± sd over seeds; Δ = paired difference "
             "against KD (mean ± sd). Reproduce: `benchmarks/distill_minority.py`.", ""]
    for name, r in res["datasets"].items():
        te = r["teacher"]
        lines += [f"## {name}: cut {', '.join(r['cut_classes'])}; train counts {r['train_counts']}; "
                  f"{r['val_images']} val images; seeds {r['seeds']}", "",
                  f"Teacher ResNet-18 ({te['epochs']} epochs on the cut set): balanced acc {te['balanced_acc']:.3f}, "
                  f"cut recall {te['recall_cut']:.3f}.", "",
                  "| variant | balanced acc | recall of cut | Δ balanced acc vs KD | Δ recall of cut vs KD | "
                  "student mass on cut (val) | prior mass on cut |", "|---|---|---|---|---|---|---|"]
        for vname, v in r["variants"].items():
            d = v["vs_kd"]
            prior = _ms(v["prior_mass_cut"]) if "prior_mass_cut" in v else "–"
            lines.append(f"| {vname} | {_ms(v['balanced_acc'])} | {_ms(v['recall_cut'])} | "
                         f"{d['balanced_acc']['mean']:+.3f} ± {d['balanced_acc']['sd']:.3f} | "
                         f"{d['recall_cut']['mean']:+.3f} ± {d['recall_cut']['sd']:.3f} | "
                         f"{_ms(v['val_prob_mass_cut'])} | {prior} |")
        lines += ["", f"Paired differences of {FOCUS} against other baselines (mean ± sd over seeds):", "",
                  "| against | Δ balanced acc | Δ recall of cut |", "|---|---|---|"]
        for other in FOCUS_AGAINST:
            d = {m: paired(r["variants"][FOCUS][m], r["variants"][other][m]) for m in ("balanced_acc", "recall_cut")}
            lines.append(f"| {other} | {d['balanced_acc']['mean']:+.3f} ± {d['balanced_acc']['sd']:.3f} | "
                         f"{d['recall_cut']['mean']:+.3f} ± {d['recall_cut']['sd']:.3f} |")
        lines += ["", f"Wall time {r['wall_s']} s.", ""]
    lines += [f"Machine: {res['machine']}.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=["all", *SETTINGS], default="all")
    ap.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated student seeds")
    ap.add_argument("--keep", help="keep the work folder here (default: a temporary folder)")
    ap.add_argument("--report", action="store_true", help="only rewrite distill_minority.md from the JSON")
    add_quick_options(ap, "digits at 8 px, 1 seed, teacher 1 epoch, students 2 epochs")
    args = ap.parse_args()
    os.environ.setdefault("FASTMED_PROGRESS", "0")
    torch.set_num_threads(1)
    if args.quick:
        args.dataset, args.seeds = "digits", "0"
    folder = results_folder(args, "distill_minority")
    if args.report:
        path = folder / "distill_minority.md"
        path.write_text(render_md(json.loads((folder / "distill_minority.json").read_text())), encoding="utf-8")
        return print(f"wrote {path}")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="distill_minority_"))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    previous = folder / "distill_minority.json"
    res = json.loads(previous.read_text()) if previous.exists() and not args.quick else {"datasets": {}}
    res["machine"] = f"{machine_note()}; torch {torch.__version__}, {torch.get_num_threads()} thread"
    res["quick"] = args.quick
    for name in (SETTINGS if args.dataset == "all" else [args.dataset]):
        res["datasets"][name] = run_dataset(name, QUICK if args.quick else SETTINGS[name], seeds, work / name)
        res["datasets"][name]["machine"] = res["machine"]
    write_results(folder, "distill_minority", res, render_md(res), work, keep=bool(args.keep))


if __name__ == "__main__":
    main()
