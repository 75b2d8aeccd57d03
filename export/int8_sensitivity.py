"""Which layers of a QDQ int8 model lose the most to quantization (the mixed-precision fallback).

ONNX Runtime's quantization debugger (``onnxruntime.quantization.qdq_loss_debug``)
records every activation of the QDQ model before and after its
QuantizeLinear/DequantizeLinear pair; the signal-to-quantization-noise ratio
(SQNR, dB) of each pair says how much that one quantization step loses. The
lowest-SQNR activations are the most sensitive: leaving the nodes that produce
and consume them in float (``nodes_to_exclude``) is the last fallback of
:func:`fastmed.export.quantize.quantize_with_fallback`.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from fastmed.export.metadata import ModelMetadata

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
QUANT_INPUT, DEQUANT_OUTPUT = "_QuantizeLinear_Input", "_DequantizeLinear_Output"  # ORT's renamings


def rank_activations(qdq_path: str | os.PathLike, images: Sequence[np.ndarray], meta: ModelMetadata,
                     batch_size: int = 8) -> list[tuple[str, float]]:
    """``(activation name, SQNR dB)`` of every quantized activation of ``qdq_path``, most sensitive first.

    ``images``: ``(H, W, 3)`` uint8 RGB (a few dozen suffice: every activation
    of every image is held in memory).
    """
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations, create_activation_matching,
                                                         compute_signal_to_quantization_noice_ratio as sqnr,
                                                         modify_model_output_intermediate_tensors)

    from fastmed.export.quantize import _calibration_reader

    qdq_path = Path(qdq_path)
    with tempfile.TemporaryDirectory(dir=qdq_path.parent) as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        modify_model_output_intermediate_tensors(qdq_path, augmented)
        activations = collect_activations(str(augmented), _calibration_reader(images, meta, batch_size))
    matching = create_activation_matching(activations)  # name -> {"pre_qdq": [...], "post_qdq": [...]}
    ranked = [(name, float(sqnr(m["pre_qdq"], m["post_qdq"]))) for name, m in matching.items()
              if "pre_qdq" in m and "post_qdq" in m]
    return sorted(ranked, key=lambda t: (t[1], t[0]))


def nodes_around(qdq_path: str | os.PathLike, activations: Sequence[str]) -> list[str]:
    """Names of the compute nodes that produce or consume the given activations (Q/DQ nodes left out).

    Excluding these from quantization keeps the activations in float; the
    names are those of the pre-processed graph ``quantize_qdq`` quantizes.
    """
    import onnx

    graph = onnx.load(str(qdq_path), load_external_data=False).graph
    produced = {t for a in activations for t in (a, a + QUANT_INPUT)}     # the float tensor before its Q node
    consumed = {t for a in activations for t in (a, a + DEQUANT_OUTPUT)}  # the tensor after its DQ node
    return [n.name for n in graph.node if n.name and n.op_type not in QDQ_OPS
            and (produced & set(n.output) or consumed & set(n.input))]
