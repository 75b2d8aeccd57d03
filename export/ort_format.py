"""ONNX → ORT format (``.ort``) for ONNX Runtime mobile / minimal builds.

Uses ONNX Runtime's own ``convert_onnx_models_to_ort`` tool, which writes the
``.ort`` model and ``required_operators.config`` (the operator list a minimal
build is compiled with, ``--include_ops_by_config``). The fastmed metadata is
written beside it as ``<name>.ort.json``.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
from pathlib import Path

from fastmed.errors import FastmedError
from fastmed.export.metadata import ModelMetadata, write_sidecar

OPS_CONFIG = "required_operators.config"


def convert_to_ort(onnx_path: str | os.PathLike, out: str | os.PathLike, meta: ModelMetadata) -> list[Path]:
    """Convert ``onnx_path`` to ``out`` (``.ort``); return ``[out, operator config, metadata sidecar]``.

    The operator config lands beside ``out`` as ``<stem>.required_operators.config``.
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    out = Path(out)
    if out.suffix != ".ort":
        raise FastmedError(f"ORT format output must end in .ort, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / "in" / f"{out.stem}.onnx"
        staged.parent.mkdir()
        shutil.copyfile(onnx_path, staged)
        log = io.StringIO()
        try:
            with contextlib.redirect_stdout(log):
                convert_onnx_models_to_ort(staged, output_dir=Path(tmp) / "out",
                                           optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:  # the tool raises plain exceptions with its own messages
            raise FastmedError(f"ORT format conversion of {onnx_path} failed: {exc}\n{log.getvalue()}") from exc
        produced = Path(tmp) / "out" / f"{out.stem}.ort"
        config = next((Path(tmp) / "out").glob("*.config"), None)
        if not produced.is_file() or config is None:
            raise FastmedError(f"ORT format conversion wrote no .ort/.config for {onnx_path}:\n{log.getvalue()}")
        os.replace(produced, out)
        ops = out.with_name(f"{out.stem}.{OPS_CONFIG}")
        ops.write_text(config.read_text().replace(str(produced), out.name))
    sidecar = write_sidecar(out, meta, {"source_onnx": Path(onnx_path).name, "operator_config": ops.name})
    return [out, ops, sidecar]
