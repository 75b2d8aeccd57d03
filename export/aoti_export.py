"""AOTInductor packages (``.pt2``): a classifier compiled ahead of time for a C++ or Python runtime.

``export_aoti`` runs ``torch.export`` with a dynamic batch axis and compiles
the graph with ``torch._inductor.aoti_compile_and_package`` for one device
(the CPU, or CUDA when the model is exported there). The package runs from
Python (``torch._inductor.aoti_load_package``, see
:class:`~fastmed.export.aoti_runtime.AotiBackend`) and from C++
(``torch::inductor::AOTIModelPackageLoader``, see ``cmake/``).

The fastmed metadata travels in the package's own metadata map, one key per
field: ``fastmed.<field>`` → the value of :meth:`ModelMetadata.to_props`
(strings as they are, lists as JSON), so the C++ runner needs no JSON library
beyond flat arrays; ``fastmed_max_batch`` is the top of the dynamic batch
axis (larger batches are run in chunks). Input: ``(B, 3, H, W)`` float32 normalized
(``float32-nchw-normalized``); output: ``(B, C)`` logits.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from fastmed.errors import FastmedError
from fastmed.export.metadata import ModelMetadata

META_PREFIX = "fastmed."
MAX_BATCH_KEY = "fastmed_max_batch"


def metadata_entries(meta: ModelMetadata, max_batch: int) -> dict[str, str]:
    """The package metadata map for ``meta``: ``{"fastmed.<field>": value, "fastmed_max_batch": "64"}``."""
    return {META_PREFIX + k: v for k, v in meta.to_props().items()} | {MAX_BATCH_KEY: str(max_batch)}


def metadata_from_entries(entries: dict[str, str], source: str) -> ModelMetadata:
    """Inverse of :func:`metadata_entries` (other keys, e.g. ``AOTI_DEVICE_KEY``, are ignored); validated."""
    props = {k[len(META_PREFIX):]: v for k, v in entries.items() if k.startswith(META_PREFIX)}
    return ModelMetadata.from_props(props, source)


def read_aoti_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Metadata of a ``.pt2`` package read from its archive, without loading the compiled model.

    AOTInductor stores the metadata map as ``<name>/data/aotinductor/model/*_metadata.json``.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if "/data/aotinductor/model/" in n and n.endswith("_metadata.json")]
            entries: dict[str, str] = {}
            for name in names:
                entries |= json.loads(zf.read(name).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError, UnicodeDecodeError) as exc:
        raise FastmedError(f"{path} is not an AOTInductor package ({exc})") from exc
    return metadata_from_entries(entries, str(path))


def export_aoti(model, meta: ModelMetadata, out: Path, max_batch: int = 64, device: str = "cpu") -> Path:
    """Compile ``model`` (an eval-mode classifier) into the ``.pt2`` package ``out`` for ``device``.

    The batch axis is dynamic in ``[1, max_batch]``. On the CPU the compiled
    kernels use at most ``torch.get_num_threads()`` of the exporting process
    (one thread compiles serial code). The package is written into a temporary
    folder beside ``out`` under its final name (the archive's top folder is
    named after the file) and moved, so a failed compile never leaves a
    half-written file at ``out``.
    """
    import copy
    import shutil
    import tempfile

    import torch

    h, w = meta.input_size
    dev = torch.device(device)
    if dev.type != "cpu":
        model = copy.deepcopy(model).to(dev)  # the caller's CPU model stays the parity reference
    example = torch.randn(2, 3, h, w, device=dev)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    try:
        program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types for untraceable models
        raise FastmedError(f"torch.export failed for {meta.arch}: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(tmp / out.name),
            inductor_configs={"aot_inductor.metadata": metadata_entries(meta, max_batch)})
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
