"""The ``.pt2`` backend of :class:`~fastmed.export.predictor.Predictor` (AOTInductor packages)."""
from __future__ import annotations

import os

import numpy as np

from fastmed.errors import FastmedError
from fastmed.export.aoti_export import MAX_BATCH_KEY, metadata_from_entries


class AotiBackend:
    """A ``.pt2`` package from ``fastmed export --format aoti`` run by ``torch._inductor.aoti_load_package``.

    The package was compiled for one device (its ``AOTI_DEVICE_KEY``: ``cpu``
    or ``cuda``) and runs there: batches are moved to it, in chunks of at most
    the package's ``fastmed_max_batch``. ``run``: ``(N, 3, H, W)`` float32 → ``(N, C)`` float32 logits.
    """

    name = "aoti"

    def __init__(self, path: str | os.PathLike):
        import torch

        try:
            self.model = torch._inductor.aoti_load_package(str(path))
            entries = dict(self.model.get_metadata())
        except Exception as exc:  # the loader raises RuntimeError for foreign, truncated or wrong-device packages
            raise FastmedError(f"cannot load AOTInductor package {path}: {str(exc).splitlines()[0]}") from exc
        self.meta = metadata_from_entries(entries, str(path))
        self.device = torch.device(entries.get("AOTI_DEVICE_KEY", "cpu"))
        self.max_batch = int(entries.get(MAX_BATCH_KEY, 1))
        self._torch = torch

    def run(self, batch: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            x = self._torch.from_numpy(batch).to(self.device)
            return np.concatenate([self.model(chunk).float().cpu().numpy() for chunk in x.split(self.max_batch)])
