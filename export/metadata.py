"""Model metadata that travels with every exported artifact.

The same fields are written into an ONNX file's ``metadata_props`` and into a
JSON sidecar beside artifacts that have no metadata slot of their own
(TensorRT engines, ``.ort`` files): ``model.engine`` → ``model.engine.json``.
A :class:`~fastmed.export.predictor.Predictor` reads them back and needs
nothing else to preprocess images and name the classes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmed.engine.atomic import atomic_write_json
from fastmed.errors import FastmedError

# input_format values: what the artifact's input tensor holds
FLOAT_NCHW = "float32-nchw-normalized"  # (B, 3, H, W) float32, already normalized
UINT8_NHWC = "uint8-nhwc"               # (B, H, W, 3) uint8 in channel_order; normalization is in the graph
INPUT_FORMATS = (FLOAT_NCHW, UINT8_NHWC)
CHANNEL_ORDERS = ("RGB", "BGR")
EXPORTABLE_KINDS = ("classifier", "segmenter")  # segmenters output (B, K, H, W) mask logits (export.segmenter)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass
class ModelMetadata:
    """What an exported model needs to be used: preprocessing and class names.

    ``input_size`` is ``[H, W]``; ``mean``/``std`` apply to pixel values in
    ``[0, 1]`` after the channels are put in ``channel_order``.
    """

    task: str
    kind: str
    arch: str
    class_names: list[str]
    input_size: list[int]
    channel_order: str = "RGB"
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    fastmed_version: str = ""
    source_sha256: str = ""
    input_format: str = FLOAT_NCHW
    precision: str = "fp32"
    input_name: str = "images"
    output_name: str = "logits"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def replace(self, **changes: Any) -> "ModelMetadata":
        return dataclasses.replace(self, **changes)

    def to_props(self) -> dict[str, str]:
        """Flat ``str -> str`` map for ONNX ``metadata_props`` (lists as JSON)."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> "ModelMetadata":
        """Inverse of :meth:`to_props`, validated; raises ``FastmedError`` naming ``source`` and the field."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in props:
                continue
            raw = props[f.name]
            try:
                out[f.name] = raw if f.type in ("str", str) else json.loads(raw)
            except (TypeError, ValueError) as exc:
                raise FastmedError(f"{source}: fastmed metadata field {f.name!r} is not valid JSON ({exc})") from exc
        missing = [n for n in ("task", "kind", "class_names", "input_size") if n not in out]
        if missing:
            raise FastmedError(f"{source} has no fastmed metadata ({', '.join(missing)} missing), so it is not a "
                               "fastmed export; make one from a checkpoint with `fastmed export --weights best.pt`")
        out.setdefault("arch", "")
        return cls(**out).validated(source)

    def validated(self, source: str = "model") -> "ModelMetadata":
        """``self`` when every field is usable; else ``FastmedError`` naming ``source`` and the field."""
        def bad(name: str, why: str) -> FastmedError:
            return FastmedError(f"{source}: fastmed metadata field {name!r} {why}, got {getattr(self, name)!r}")

        for name in ("task", "kind", "arch", "channel_order", "input_format", "precision"):
            if not isinstance(getattr(self, name), str):
                raise bad(name, "must be a string")
        names = self.class_names
        if not isinstance(names, list) or not names or not all(isinstance(c, str) and c for c in names):
            raise bad("class_names", "must be a non-empty list of non-empty strings")
        if len(set(names)) != len(names):
            raise bad("class_names", "has duplicates")
        size = self.input_size
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)):
            raise bad("input_size", "must be [height, width] with positive integers")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if not (isinstance(v, list) and len(v) == 3 and all(_is_real(x) and math.isfinite(x) for x in v)):
                raise bad(name, "must be 3 finite numbers (one per channel)")
        if not all(x > 0 for x in self.std):
            raise bad("std", "must be positive")
        if self.channel_order not in CHANNEL_ORDERS:
            raise bad("channel_order", f"must be one of {', '.join(CHANNEL_ORDERS)}")
        if self.input_format not in INPUT_FORMATS:
            raise bad("input_format", f"must be one of {', '.join(INPUT_FORMATS)}")
        return self


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def metadata_from_checkpoint(ckpt: dict[str, Any], source_path: str | os.PathLike | None = None) -> ModelMetadata:
    """Metadata of a fastmed classifier or segmenter checkpoint (see ``fastmed.engine.checkpoint``)."""
    if ckpt.get("kind") not in EXPORTABLE_KINDS:
        raise FastmedError(f"export supports {' and '.join(EXPORTABLE_KINDS)} checkpoints; "
                           f"this one is kind={ckpt.get('kind')!r}")
    if not ckpt.get("class_names") or not ckpt.get("input_size"):
        raise FastmedError("checkpoint lacks class_names or input_size; re-save it with make_checkpoint(...)")
    norm = ckpt.get("normalization") or {}
    return ModelMetadata(
        task=str(ckpt.get("task", "")),
        kind=str(ckpt["kind"]),
        arch=str(ckpt["arch"]["name"]),
        class_names=[str(c) for c in ckpt["class_names"]],
        input_size=[int(s) for s in ckpt["input_size"]],
        channel_order=str(ckpt.get("channel_order", "RGB")),
        mean=[float(v) for v in norm.get("mean", [0.485, 0.456, 0.406])],
        std=[float(v) for v in norm.get("std", [0.229, 0.224, 0.225])],
        fastmed_version=str(ckpt.get("fastmed_version", "")),
        source_sha256=file_sha256(source_path) if source_path else "",
    ).validated(str(source_path or "checkpoint"))


def sidecar_path(artifact: str | os.PathLike) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    p = Path(artifact)
    return p.with_name(p.name + ".json")


def write_sidecar(artifact: str | os.PathLike, meta: ModelMetadata, extra: dict[str, Any] | None = None) -> Path:
    """Write the metadata (plus ``extra`` build facts) as JSON beside ``artifact``."""
    return atomic_write_json(sidecar_path(artifact), {**dataclasses.asdict(meta), **(extra or {})})


def read_sidecar(artifact: str | os.PathLike) -> ModelMetadata:
    """Metadata from the JSON sidecar of ``artifact`` (``.ort`` files and TensorRT engines), validated."""
    path = sidecar_path(artifact)
    if not path.is_file():
        raise FastmedError(f"{artifact} has no fastmed metadata: `fastmed export` writes it beside the file as "
                           f"{path.name}, which is missing (copy it along, or export again)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise FastmedError(f"{path}: cannot read the fastmed metadata ({exc})") from exc
    if not isinstance(data, dict):
        raise FastmedError(f"{path}: fastmed metadata must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(ModelMetadata)}
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if k in names}
    return ModelMetadata.from_props(props, source=str(path))


def read_onnx_metadata(path: str | os.PathLike) -> ModelMetadata:
    """Metadata from an ONNX file's ``metadata_props`` (weights are not loaded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return ModelMetadata.from_props({p.key: p.value for p in model.metadata_props}, source=str(path))


def set_onnx_metadata(model: Any, meta: ModelMetadata) -> None:
    """Replace the fastmed keys of an ``onnx.ModelProto``'s ``metadata_props`` in place."""
    props = meta.to_props()
    kept = [(p.key, p.value) for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for key, value in [*kept, *props.items()]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
