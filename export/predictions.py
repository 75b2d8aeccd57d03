"""The one file layout of image predictions, whichever command writes them.

``fastmed predict``, ``fastmed polyp predict`` and ``fastmed distill predict``
all write through :func:`write_predictions`: one row per readable image,
columns ``path,class,prob_<name>...`` (one ``prob_`` column per class, in the
model's class order; ``class`` is the arg-max). A ``.json`` file holds the
same records as a list of objects.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from fastmed.engine.atomic import atomic_write_text


def prediction_columns(class_names: Sequence[str]) -> list[str]:
    """``["path", "class", "prob_<name>", ...]``."""
    return ["path", "class", *[f"prob_{c}" for c in class_names]]


def prediction_records(paths: Sequence[str | os.PathLike], probs: np.ndarray, class_names: Sequence[str]) -> list[dict]:
    """One record per image: ``paths[i]`` with its ``(C,)`` row of ``probs`` ``(N, C)``."""
    cols = prediction_columns(class_names)[2:]
    return [{"path": str(p), "class": class_names[int(row.argmax())], **{c: float(v) for c, v in zip(cols, row)}}
            for p, row in zip(paths, probs)]


def write_predictions(path: str | os.PathLike, paths: Sequence[str | os.PathLike], probs: np.ndarray,
                      class_names: Sequence[str]) -> Path:
    """Write the records as CSV, or as JSON when ``path`` ends in ``.json``; returns ``path``."""
    path = Path(path)
    records = prediction_records(paths, probs, class_names)
    if path.suffix.lower() == ".json":
        return atomic_write_text(path, json.dumps(records, indent=2) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=prediction_columns(class_names))
    writer.writeheader()
    writer.writerows(records)
    return atomic_write_text(path, buf.getvalue())
