"""Evidence for ``wsi train --stream``: peak memory independent of the cohort, and epoch time against the in-memory path.

Generates feature files of ``--slides`` slides x ``--patches`` patches x
``--dim`` float16 features (default 2,000 x 2,000 x 1,024, about 8 GB) into a
temporary work folder (removed at the end; never committed), then runs
``fastmed wsi train`` as a subprocess and samples the memory of its process
tree (the trainer and its DataLoader workers: the sum of their proportional set
sizes, PSS, so pages shared after fork count once; and the trainer's own RSS)
every 0.2 s:

1. ``--stream`` on the whole cohort (``--big-epochs`` epochs);
2. ``--stream`` and the in-memory path on a ``--subset`` of the slides that
   fits in memory, ``--seeds`` seeds each, ``--epochs`` epochs: peak memory
   and the mean epoch time (``epoch_time_s`` of ``metrics.jsonl``: training
   and validation), paired by seed.

    OMP_NUM_THREADS=1 python benchmarks/bench_wsi_stream.py            # ~15 min on 2 shared cores
    python benchmarks/bench_wsi_stream.py --quick                       # smoke run, tiny cohort
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_note import machine_note  # noqa: E402
from quick import add_quick_options, results_folder, write_results  # noqa: E402

from fastmed.wsi.patch_file import PatchSet, write_patch_file  # noqa: E402

ENCODER = {"encoder": "generated", "encoder_weights": "", "encoder_seed": 0, "encoder_sha256": "0" * 64}


def write_cohort(folder: Path, n_slides: int, n: int, dim: int) -> tuple[Path, float]:
    """``n_slides`` float16 feature files (alternating normal/tumor) and ``labels.csv``; returns (labels, GB on disk)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pool = [rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16) for _ in range(8)]  # reused blocks: fast
    coords = np.stack([np.arange(n) * 224, np.zeros(n)], 1).astype(np.int64)
    rows = []
    for i in range(n_slides):
        tumor = i % 2
        feats = np.roll(pool[i % len(pool)], i, axis=0)
        fraction = np.zeros(n, np.float32)
        if tumor:  # a tenth of the patches carry the signal
            feats = feats.copy()
            feats[: n // 10, : dim // 8] += np.float16(1.0)
            fraction[: n // 10] = 1.0
        attrs = {"slide_id": f"s{i:05d}", "slide_path": f"/generated/s{i:05d}.svs", "size0": 224, "patch_size": 224,
                 "mpp": 0.5, "mode": "bbox", "feature_dim": dim, **ENCODER}
        write_patch_file(folder / f"s{i:05d}.h5", PatchSet(coords, attrs, np.ones(n, np.float32), fraction, feats))
        rows.append({"slide_id": f"s{i:05d}", "label": "tumor" if tumor else "normal"})
    labels = folder.parent / f"{folder.name}_labels.csv"
    with open(labels, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["slide_id", "label"])
        w.writeheader()
        w.writerows(rows)
    return labels, sum(p.stat().st_size for p in folder.iterdir()) / 1e9


def tree_memory(root: int) -> tuple[int, int]:
    """``(PSS of the process tree, RSS of root)`` in bytes, from /proc (0 for processes that ended)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d))
    todo, pss, rss = [root], 0, 0
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
                elif line.startswith("Rss:") and pid == root:
                    rss = int(line.split()[1]) * 1024
        except OSError:
            continue
    return pss, rss


def run_train(features: Path, labels: Path, out: Path, epochs: int, seed: int, stream: bool, workers: int) -> dict:
    """One ``fastmed wsi train`` subprocess: peak memory (sampled every 0.2 s), epoch times, wall time."""
    cmd = [sys.executable, "-c", "import sys; from fastmed.cli import main; sys.exit(main(sys.argv[1:]))",
           "wsi", "train", "--features", str(features), "--labels", str(labels), "--out", str(out), "--epochs", str(epochs),
           "--seed", str(seed), "--val-fraction", "0.1", "--batch-size", "4", "--device", "cpu", "--progress", "false"]
    if stream:
        cmd += ["--stream", "--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FASTMED_PROGRESS": "0"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0]

    def sample() -> None:
        while proc.poll() is None:
            pss, rss = tree_memory(proc.pid)
            peak[0], peak[1] = max(peak[0], pss), max(peak[1], rss)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    log = proc.communicate()[0]
    sampler.join()
    if proc.returncode:
        raise SystemExit(f"wsi train failed ({proc.returncode}):\n{log[-3000:]}")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"stream": stream, "seed": seed, "peak_tree_pss_gb": round(peak[0] / 1e9, 3), "peak_main_rss_gb": round(peak[1] / 1e9, 3),
            "epoch_time_s": [r["epoch_time_s"] for r in records], "wall_s": round(time.perf_counter() - t0, 1),
            "load_at_end": round(os.getloadavg()[0], 2)}


def subset_folder(features: Path, n: int) -> Path:
    """The first ``n`` feature files, linked into a folder of their own."""
    sub = features.parent / f"subset_{n}"
    sub.mkdir()
    for p in sorted(features.iterdir())[:n]:
        (sub / p.name).symlink_to(p)
    return sub


def mean_sd(v: list[float]) -> str:
    a = np.asarray(v, float)
    return f"{a.mean():.2f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slides", type=int, default=2000)
    ap.add_argument("--patches", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--subset", type=int, default=40, help="slides of the stream-vs-memory comparison")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each subset run")
    ap.add_argument("--big-epochs", type=int, default=1, help="epochs of the whole-cohort streamed run")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the streamed runs")
    ap.add_argument("--work", help="parent of the temporary work folder (needs the cohort's size free)")
    add_quick_options(ap, "40 slides x 200 patches x 64, 2 seeds")
    args = ap.parse_args()
    if args.quick:
        args.slides, args.patches, args.dim, args.subset, args.seeds, args.epochs = 40, 200, 64, 20, 2, 1
    out = results_folder(args, "wsi_stream")
    work = Path(tempfile.mkdtemp(prefix="wsi_stream_", dir=args.work))
    note = machine_note()
    print(note, flush=True)
    try:
        t0 = time.perf_counter()
        labels, gb = write_cohort(work / "features", args.slides, args.patches, args.dim)
        write_s = time.perf_counter() - t0
        print(f"wrote {args.slides} feature files, {gb:.2f} GB, in {write_s:.0f} s", flush=True)
        big = run_train(work / "features", labels, work / "run_big", args.big_epochs, 0, True, args.workers)
        print(f"stream, {args.slides} slides: {big}", flush=True)
        sub = subset_folder(work / "features", args.subset)
        runs = []
        for seed in range(args.seeds):
            for stream in (False, True):
                runs.append(run_train(sub, labels, work / f"run_{seed}_{int(stream)}", args.epochs, seed, stream, args.workers))
                print(f"subset {args.subset}: {runs[-1]}", flush=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # never leave gigabytes of generated files behind
        raise
    mem = [r for r in runs if not r["stream"]]
    st = [r for r in runs if r["stream"]]
    ep = lambda r: float(np.mean(r["epoch_time_s"]))  # noqa: E731
    diff = [ep(s) - ep(m) for s, m in zip(st, mem)]
    res = {"machine": note, "slides": args.slides, "patches": args.patches, "dim": args.dim, "dtype": "float16",
           "cohort_gb_on_disk": round(gb, 2), "write_s": round(write_s, 1), "workers": args.workers, "batch_size": 4,
           "stream_whole_cohort": big, "subset": args.subset, "subset_runs": runs,
           "subset_epoch_time_stream_minus_memory_s": [round(d, 3) for d in diff]}
    md = "\n".join([
        f"# wsi train: streamed vs in-memory features ({args.slides} slides x {args.patches} patches x {args.dim}, float16)",
        "",
        f"Machine: {note}. Cohort {gb:.2f} GB on disk (written in {write_s:.0f} s). `--batch-size 4`, `--val-fraction 0.1`, "
        f"streamed runs `--workers {args.workers}`; memory = peak PSS summed over the trainer and its DataLoader workers "
        "(sampled every 0.2 s), and the trainer's own peak RSS.",
        "",
        "| run | slides | peak memory, tree PSS (GB) | trainer peak RSS (GB) | mean epoch time (s) |",
        "|---|---|---|---|---|",
        f"| `--stream`, whole cohort, {args.big_epochs} epoch(s) | {args.slides} | {big['peak_tree_pss_gb']} | "
        f"{big['peak_main_rss_gb']} | {mean_sd(big['epoch_time_s'])} |",
        f"| `--stream`, subset, {args.seeds} seeds | {args.subset} | {mean_sd([r['peak_tree_pss_gb'] for r in st])} | "
        f"{mean_sd([r['peak_main_rss_gb'] for r in st])} | {mean_sd([ep(r) for r in st])} |",
        f"| in memory, subset, {args.seeds} seeds | {args.subset} | {mean_sd([r['peak_tree_pss_gb'] for r in mem])} | "
        f"{mean_sd([r['peak_main_rss_gb'] for r in mem])} | {mean_sd([ep(r) for r in mem])} |",
        "",
        f"Epoch time, streamed minus in memory, paired by seed ({args.subset} slides, {args.epochs} epoch(s) each): "
        f"{mean_sd(diff)} s. Load average at the end of each run: {[r['load_at_end'] for r in [big, *runs]]}.",
        "",
    ])
    write_results(out, "wsi_stream", res, md, work, keep=False)


if __name__ == "__main__":
    main()
