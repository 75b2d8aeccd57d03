"""CTest entry: ``fastmed-run`` gives the Python ``Predictor``'s probabilities (tolerances: fastmed.export.native_runner).

    python cmake/tests/check_runner.py --runner build/native/fastmed-run

Trains a tiny recognizer (ResNet-18, 32x32, 1 epoch on fastmed's tiny
synthetic data) and exports it with ``--format aoti`` in a temporary folder,
unless ``FASTMED_NATIVE_MODEL`` (a .pt2) and ``FASTMED_NATIVE_REFERENCE`` (its
.pt) name an existing export. Then checks batches 1 and 7 on images at model
size, larger PNG/JPEG, huge PNG and corrupt files. Exit 0 when every check holds.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np


def tiny_export(work: Path) -> tuple[Path, Path]:
    from fastmed.cli import main
    from fastmed.data.synthetic import make_synthetic
    from fastmed.export import export

    make_synthetic(work / "synth", seed=0, size="tiny")
    data = work / "synth" / "polyp"
    if main(["polyp", "train", "--data", str(data), "--arch", "resnet18", "--epochs", "1", "--image-size", "32",
             "--out", str(work / "train"), "--progress", "false"]) != 0:
        sys.exit("check_runner: training the tiny recognizer failed")
    best = work / "train" / "weights" / "best.pt"
    return export(best, "aoti", best.with_suffix(".pt2"), data=str(data / "val"), device="cpu").path, best


def check(runner: Path, model: Path, reference: Path, work: Path) -> list[str]:
    """Every failed check, as a sentence (empty when the runner agrees with Python)."""
    from fastmed.export import Predictor
    from fastmed.export.native_runner import EXACT_TOL, ONE_STEP_RESIZE_TOL, run_native, write_probe_images
    from fastmed.export.preprocess import random_images

    ref = Predictor(reference)
    probe = write_probe_images(work / "probe", random_images(7, ref.meta.input_size, seed=1), ref.meta.input_size)
    failures = []
    for batch in (1, 7):
        for name, files, tol in [("model size", probe.at_size, EXACT_TOL), ("larger PNG/JPEG", probe.larger + probe.jpeg, EXACT_TOL),
                                 ("huge PNG", probe.huge, ONE_STEP_RESIZE_TOL)]:
            r = run_native(runner, model, [probe.corrupt[0], *files, probe.corrupt[1]], work / "out.csv", batch=batch)
            expected = ref.predict(files)
            if r.returncode != 0 or r.paths != [str(f) for f in files] or r.skipped != [str(f) for f in probe.corrupt]:
                failures.append(f"batch {batch}, {name}: rc {r.returncode}, rows {len(r.paths)}, skipped {r.skipped}\n{r.stderr}")
                continue
            diff = float(np.abs(r.probs - expected).max())
            if r.class_names != ref.class_names:
                failures.append(f"class order {r.class_names} != {ref.class_names}")
            if diff > tol or (r.probs.argmax(1) != expected.argmax(1)).any():
                failures.append(f"batch {batch}, {name}: max |Δprob| {diff:.2e} > {tol:g} or top-1 differs")
            print(f"batch {batch}, {name}: max |Δprob| {diff:.2e} (tolerance {tol:g})")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runner", required=True, type=Path, help="the built fastmed-run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastmed_check_runner_") as tmp:
        work = Path(tmp)
        if os.environ.get("FASTMED_NATIVE_MODEL") and os.environ.get("FASTMED_NATIVE_REFERENCE"):
            model, reference = Path(os.environ["FASTMED_NATIVE_MODEL"]), Path(os.environ["FASTMED_NATIVE_REFERENCE"])
        else:
            model, reference = tiny_export(work)
        failures = check(args.runner, model, reference, work)
    for f in failures:
        print("FAILED:", f)
    print("check_runner: ok" if not failures else f"check_runner: {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
