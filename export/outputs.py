"""Where ``fastmed export`` may write: never onto its input, never over a stranger's file.

The policy, checked before anything is written:

1. the output's suffix names the format (``.onnx`` for onnx / onnx-int8,
   ``.ort``, ``.engine`` / ``.plan`` / ``.trt``, ``.pt2`` for aoti): a :class:`Predictor` picks
   its runtime by suffix, so ``--out best.pt`` could never be used anyway;
2. no file export writes (the model, its intermediate ONNX graphs, sidecars,
   operator config, timing cache) is an input (``--weights``, ``--from-onnx``)
   — compared after resolving symlinks, and by inode where the file exists;
3. an existing model file is replaced only when it is a previous fastmed
   export (an ONNX file with fastmed ``metadata_props``, an ``.ort`` /
   engine file with its fastmed sidecar, or a ``.pt2`` package with fastmed
   metadata); anything else is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from fastmed.errors import ConfigError, FastmedError

OUTPUT_SUFFIXES = {"onnx": (".onnx",), "onnx-int8": (".onnx",), "ort": (".ort",),
                   "tensorrt": (".engine", ".plan", ".trt"), "aoti": (".pt2",)}


def check_output_suffix(fmt: str, out: Path) -> None:
    """Rule 1: raise ``ConfigError`` when ``out`` does not end in a suffix of ``fmt``."""
    allowed = OUTPUT_SUFFIXES[fmt]
    if out.suffix.lower() not in allowed:
        raise ConfigError(f"--out {out}: a {fmt} export must end in {' or '.join(allowed)} "
                          "(the runtime is chosen by suffix)")


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name one file (symlinks resolved; hard links by inode)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def is_fastmed_export(path: Path) -> bool:
    """True when ``path`` holds fastmed metadata (ONNX ``metadata_props``, a ``.pt2``'s metadata, or a sidecar)."""
    from fastmed.export.aoti_export import read_aoti_metadata
    from fastmed.export.metadata import read_onnx_metadata, read_sidecar

    try:
        if path.suffix.lower() == ".onnx":
            read_onnx_metadata(path)
        elif path.suffix.lower() == ".pt2":
            read_aoti_metadata(path)
        else:
            read_sidecar(path)
    except Exception:  # unreadable or foreign: not ours  # noqa: BLE001
        return False
    return True


def check_outputs(inputs: Iterable[Path | None], models: Iterable[Path], companions: Iterable[Path] = ()) -> None:
    """Rules 2 and 3 for the ``models`` and ``companions`` (sidecars, caches) an export will write."""
    inputs = [Path(p) for p in inputs if p]
    models, companions = [Path(p) for p in models], [Path(p) for p in companions]
    for target in [*models, *companions]:
        for source in inputs:
            if same_file(target, source):
                raise FastmedError(f"export would write {target} over its input {source}; choose another --out")
    for target in models:
        if target.exists() and not is_fastmed_export(target):
            raise FastmedError(f"{target} exists and is not a fastmed export; remove it or choose another --out")
