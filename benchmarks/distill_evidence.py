"""Evidence for ``fastmed distill``: does the student learn more from the teacher than from labels alone?

For each dataset (scikit-learn's bundled digits; the synthetic polyps, size
``small``): a ResNet-18 teacher is trained on labels, then a MobileNetV3-small
student, several seeds per method:

    scratch       labels only (cross-entropy)
    kd            labels + Hinton KD (T = 4)
    mi            labels + IIC mutual information −I(S;T) (no prior)
    mi_prior      labels + MI with the learnable Gaussian prior
    mi_prior_kd   labels + MI with the prior + KD

Reported: validation top-1 after the last epoch (no checkpoint selection),
mean ± sd over seeds; the teacher's top-1; parameters, weight MB and CPU latency
(batch 1, median, one thread) of teacher and student measured in the same process.

    .venv/bin/python benchmarks/distill_evidence.py --dataset digits
    .venv/bin/python benchmarks/distill_evidence.py --dataset polyp
    .venv/bin/python benchmarks/distill_evidence.py --report        # distill.md from the JSON files
    .venv/bin/python benchmarks/distill_evidence.py --quick         # smoke run: digits, 1 seed, 2 epochs, 8 px, 2 methods

writes ``benchmarks/results/distill_<dataset>.json`` and ``benchmarks/results/distill.md``
(``--quick``: into a temporary folder, or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from machine_note import machine_note  # benchmarks/machine_note.py (this folder is on sys.path)
from quick import add_quick_options, results_folder  # benchmarks/quick.py
METHODS = {
    "scratch": dict(kd_weight=0.0, mi_weight=0.0),
    "kd": dict(kd_weight=1.0, mi_weight=0.0),
    "mi": dict(kd_weight=0.0, mi_weight=1.0, prior=False),
    "mi_prior": dict(kd_weight=0.0, mi_weight=1.0, prior=True),
    "mi_prior_kd": dict(kd_weight=1.0, mi_weight=1.0, prior=True),
}
SETTINGS = {  # dataset -> data source (None: synthetic polyps written to a temporary folder), input side, batch, epochs
    "digits": dict(data="digits", image_size=16, batch_size=64, teacher_epochs=6, student_epochs=6, lr=2e-3),
    "polyp": dict(data=None, image_size=32, batch_size=32, teacher_epochs=15, student_epochs=15, lr=2e-3),
}
# --quick: digits only, and only the two ends of the method list
QUICK = dict(data="digits", image_size=8, batch_size=128, teacher_epochs=2, student_epochs=2, lr=2e-3)
QUICK_METHODS = ("scratch", "mi_prior_kd")
BASELINE = "scratch"  # the paired differences of the report are against it (the same seeds)


def _config(setting: dict, data: str, out: Path, arch: str, epochs: int, seed: int, teacher: str | None,
            label_fraction: float, **loss):
    from fastmed.cfg.distill import DistillTrainConfig

    cfg = DistillTrainConfig(data=data, out=str(out), arch=arch, epochs=epochs, lr=setting["lr"], seed=seed,
                             teacher=teacher, image_size=None if teacher else setting["image_size"],
                             batch_size=setting["batch_size"], device="cpu", progress=False,
                             label_fraction=label_fraction, **loss)
    cfg.validate()
    return cfg


def run_dataset(name: str, seeds: list[int], label_fraction: float, work: Path, setting: dict, methods: dict,
                latency_runs: int = 50) -> dict:
    from fastmed.distill.size import cpu_latency_ms, model_size
    from fastmed.distill.train import run_train
    from fastmed.engine.checkpoint import load_model

    data, teacher_epochs, student_epochs = setting["data"], setting["teacher_epochs"], setting["student_epochs"]
    if data is None:
        from fastmed.data.synthetic import make_synthetic

        data = str(make_synthetic(work / "synth", seed=0, size="small", parts=["polyp"]) / "polyp")
    t0 = time.perf_counter()
    teacher_run = run_train(_config(setting, data, work / "teacher", "resnet18", teacher_epochs, 0, None,
                                    1.0, kd_weight=0.0, mi_weight=0.0))
    teacher_ckpt, history = str(teacher_run.last_weights), teacher_run.history
    result = {"dataset": name, "data": data if name != "polyp" else "synthetic polyps (size small)",
              "teacher": {"arch": "resnet18", "epochs": teacher_epochs, "val_acc": history[-1]["val/acc"]},
              "student": {"arch": "mobilenet_v3_small", "epochs": student_epochs, "lr": setting["lr"],
                          "batch_size": setting["batch_size"], "label_fraction": label_fraction, "seeds": seeds},
              "methods": {}}
    print(f"[{name}] teacher val acc {history[-1]['val/acc']:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    student_ckpt = None
    for method, loss in methods.items():
        accs = []
        for seed in seeds:
            t1 = time.perf_counter()
            teacher = None if method == "scratch" else teacher_ckpt
            run = run_train(_config(setting, data, work / f"{method}_{seed}", "mobilenet_v3_small",
                                    student_epochs, seed, teacher, label_fraction, **loss))
            accs.append(run.history[-1]["val/acc"])
            student_ckpt = student_ckpt or str(run.last_weights)
            print(f"[{name}] {method} seed {seed}: val acc {accs[-1]:.4f} ({time.perf_counter() - t1:.0f} s)", flush=True)
        result["methods"][method] = {"val_acc": accs, "mean": statistics.mean(accs),
                                     "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0}
    teacher_model, ckpt = load_model(teacher_ckpt)
    student_model, _ = load_model(student_ckpt)
    size = ckpt["input_size"][0]
    for role, model in (("teacher", teacher_model), ("student", student_model)):
        result[role].update(model_size(model))
        result[role]["cpu_latency_ms_b1"] = cpu_latency_ms(model, size, runs=latency_runs)
    result["input_size"] = size
    result["precise_bn"] = True  # distill train re-estimates BatchNorm statistics before every evaluation
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def machine() -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "note": machine_note()}


def render_markdown(results: list[dict]) -> str:
    lines = ["# distill evidence", "",
             "Validation top-1 after the last epoch (no checkpoint selection), mean ± sd over seeds. "
             "Teacher ResNet-18 trained on labels; student MobileNetV3-small; every student also gets the "
             "cross-entropy on labels. Reproduce: `benchmarks/distill_evidence.py --dataset NAME`.", ""]
    for r in results:
        st, te = r["student"], r["teacher"]
        when = "" if r.get("precise_bn") else "; run before the precise-BN fix"  # older JSON files lack the flag
        lines += [f"## {r['dataset']} ({r['data']}, {r['input_size']}×{r['input_size']} input{when})", "",
                  f"Teacher {te['arch']} ({te['epochs']} epochs): top-1 {te['val_acc']:.4f}. Student {st['arch']}, "
                  f"{st['epochs']} epochs, batch {st['batch_size']}, lr {st['lr']}, label fraction {st['label_fraction']}, seeds {st['seeds']}.", "",
                  f"| method | top-1 mean | sd | Δ vs {BASELINE} (paired, mean ± sd) | per seed |", "|---|---|---|---|---|"]
        base = r["methods"].get(BASELINE)
        for m, v in r["methods"].items():
            delta = "–"
            if base is not None:
                d = [a - b for a, b in zip(v["val_acc"], base["val_acc"])]
                delta = f"{statistics.mean(d):+.4f} ± {statistics.stdev(d) if len(d) > 1 else 0.0:.4f}"
            lines.append(f"| {m} | {v['mean']:.4f} | {v['sd']:.4f} | {delta} | {', '.join(f'{a:.4f}' for a in v['val_acc'])} |")
        lines += ["", "| model | params | MB | CPU latency b=1 (ms, median) |", "|---|---|---|---|"]
        for role in ("teacher", "student"):
            x = r[role]
            lines.append(f"| {role} {x['arch']} | {x['params']:,} | {x['mb']:.2f} | {x['cpu_latency_ms_b1']:.2f} |")
        ratio = te["cpu_latency_ms_b1"] / st["cpu_latency_ms_b1"]
        lines += ["", f"Student/teacher: {st['params'] / te['params']:.3f}× the parameters, "
                      f"{ratio:.2f}× faster at batch 1 (same process). Wall time {r['wall_s']} s; {r['machine']['note']}.", ""]
    m = results[0]["machine"] if results else {}
    lines += [f"Machine: {m.get('platform')}, {m.get('cpu_count')} CPUs, torch {m.get('torch')} "
              f"({m.get('torch_threads')} thread).", ""]
    return "\n".join(lines)


def write_report(folder: Path) -> Path:
    paths = [folder / f"distill_{name}.json" for name in sorted(SETTINGS)]  # not distill_minority.json
    results = [json.loads(p.read_text()) for p in paths if p.exists()]
    path = folder / "distill.md"
    path.write_text(render_markdown(results), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(SETTINGS))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds of the students")
    ap.add_argument("--label-fraction", type=float, default=1.0, help="fraction of labels the students see")
    ap.add_argument("--report", action="store_true", help="only rewrite distill.md from the JSON files")
    add_quick_options(ap, "digits at 8 px, 1 seed, teacher and 2 students (scratch, mi_prior_kd) 2 epochs")
    args = ap.parse_args()
    os.environ.setdefault("FASTMED_PROGRESS", "0")
    torch.set_num_threads(1)  # two threads were 8x slower than one on the shared machine
    if args.quick:
        args.dataset, args.seeds = "digits", "0"
    results = results_folder(args, "distill_evidence")
    if not args.report:
        if not args.dataset:
            ap.error("--dataset is required unless --report")
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        setting = QUICK if args.quick else SETTINGS[args.dataset]
        methods = {m: METHODS[m] for m in QUICK_METHODS} if args.quick else METHODS
        at_start = machine()  # its load average is the one at the start of the run
        with tempfile.TemporaryDirectory() as tmp:
            result = run_dataset(args.dataset, seeds, args.label_fraction, Path(tmp), setting, methods,
                                 5 if args.quick else 50)
        result["machine"] = at_start
        (results / f"distill_{args.dataset}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {write_report(results)}")


if __name__ == "__main__":
    main()
