"""``fastmed wsi features``: encode every patch of every tiled slide with a frozen CNN.

Reads ``<tiles>/<slide_id>.h5`` (from ``wsi tile``), reads the patches from the
slide (DataLoader workers, each with its own OpenSlide handle), and writes
``<out>/<slide_id>.h5`` with the same coordinates/labels plus ``features
(T, F)`` and the encoder's provenance (``fastmed.wsi.encoders``). Existing
outputs are kept (resume) when they come from the same encoder (name and
weights hash, which a random init's seed determines); outputs of another
encoder are refused, since one folder must never mix them (``--overwrite``
re-extracts every slide). A slide that fails is skipped and reported in
``<out>/errors.csv``. Several jobs split the slides with ``shard`` / ``claim``
(``fastmed.wsi.shard``), each writing its own report. Features are stored as
float32, or float16 (``dtype``: half the disk and streaming I/O of ``wsi train``).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastmed.engine.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from fastmed.engine.device import select_device
from fastmed.engine.progress import progress
from fastmed.errors import DataError
from fastmed.wsi.batch_report import batch_exit_status, write_report
from fastmed.wsi.encoders import build_encoder, describe_encoder, encoder_identity, weights_sha256
from fastmed.wsi.patch_file import PatchSet, list_patch_files, read_patch_file, write_patch_file
from fastmed.wsi.shard import Shard, SlideLocks, job_note, report_tag, run_slide, start_job
from fastmed.wsi.slide_io import PatchGeometry, open_slide, read_patch
from fastmed.wsi.status import reported_failures


class SlidePatches(torch.utils.data.Dataset):
    """The patches of one slide as ``(3, P, P)`` float tensors in [0, 1]; opens the slide lazily per worker."""

    def __init__(self, slide_path: str, coords: np.ndarray, geom: PatchGeometry):
        self.slide_path, self.coords, self.geom = slide_path, coords, geom
        self._slide = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._slide is None:
            self._slide = open_slide(self.slide_path)
        x, y = self.coords[i]
        return torch.from_numpy(read_patch(self._slide, x, y, self.geom).copy()).permute(2, 0, 1).float() / 255


def geometry_of(ps: PatchSet) -> PatchGeometry:
    """The patch geometry recorded by ``wsi tile``."""
    a = ps.attrs
    mpp = float(a["mpp"])
    return PatchGeometry(int(a["level"]), float(a["downsample"]), int(a["read_size"]), int(a["patch_size"]),
                         int(a["size0"]), None if np.isnan(mpp) else mpp, str(a.get("mpp_source", "")))


@torch.no_grad()
def encode_slide(tile_file: Path, out_file: Path, encoder: torch.nn.Module, enc_attrs: dict[str, Any], device: torch.device,
                 batch_size: int, workers: int, slides_dir: Path | None, show_progress: bool,
                 dtype: str = "float32") -> dict[str, Any]:
    """Encode one slide's patches; write ``out_file`` (features stored as ``dtype``); return a summary row."""
    t0 = time.perf_counter()
    ps = read_patch_file(tile_file)
    slide_path = str(ps.attrs["slide_path"])
    if slides_dir is not None:
        slide_path = str(slides_dir / Path(slide_path).name)
    open_slide(slide_path).close()  # fail early with a clear message
    mean = torch.tensor(IMAGENET_MEAN, device=device)[None, :, None, None]
    std = torch.tensor(IMAGENET_STD, device=device)[None, :, None, None]
    loader = torch.utils.data.DataLoader(SlidePatches(slide_path, ps.coords, geometry_of(ps)), batch_size=batch_size,
                                         num_workers=workers, shuffle=False)
    feats = []
    for x in progress(loader, desc=ps.slide_id, enabled=show_progress):
        x = (x.to(device, non_blocking=True) - mean) / std
        feats.append(encoder(x).float().cpu())
    dim = enc_attrs["feature_dim"]
    features = torch.cat(feats).numpy() if feats else np.zeros((0, dim), np.float32)
    ps.features = features.astype(dtype)
    ps.attrs = {**ps.attrs, **enc_attrs, "slide_path": slide_path}
    write_patch_file(out_file, ps)
    secs = time.perf_counter() - t0
    return {"slide": ps.slide_id, "patches": len(ps.coords), "seconds": round(secs, 3),
            "patches_per_s": round(len(ps.coords) / secs, 1) if secs > 0 else None}


def check_resumable(existing: list[Path], enc_attrs: dict[str, Any]) -> None:
    """``DataError`` when an existing output was made by another encoder (name or weights hash differ)."""
    for path in existing:
        attrs = read_patch_file(path, features=False).attrs
        if encoder_identity(attrs) != encoder_identity(enc_attrs):
            raise DataError(f"{path} holds features of encoder {describe_encoder(attrs)}, not of {describe_encoder(enc_attrs)}; "
                            "resuming would mix encoders in one folder: use --overwrite to re-extract every slide, or another --out")


def extract_features(tiles: str | Path, out: str | Path, encoder_name: str = "resnet50_l3", weights: str | None = None,
                     device: str = "auto", batch_size: int = 64, workers: int = 0, slides: str | Path | None = None,
                     overwrite: bool = False, seed: int = 0, show_progress: bool = True, shard: Shard = Shard(),
                     claim: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """Encode the tiled slides of ``tiles`` in ``shard``; return the summary (also ``out/features[.tag].json``)."""
    tiles, out = Path(tiles), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = select_device(device)
    encoder, dim = build_encoder(encoder_name, weights, seed)
    enc_attrs = {"encoder": encoder_name, "encoder_weights": weights or "", "feature_dim": dim, "encoder_seed": seed,
                 "encoder_sha256": weights_sha256(encoder)}
    encoder.to(dev)
    files = list_patch_files(tiles)
    mine = shard.select([f.stem for f in files])
    files = [f for f in files if f.stem in mine]
    if not overwrite:
        check_resumable([out / f.name for f in files if (out / f.name).exists()], enc_attrs)
    todo = [f for f in files if overwrite or not (out / f.name).exists()]
    locks = SlideLocks(out) if claim else None
    done, failed = [], []
    t0 = time.perf_counter()
    for f in progress(todo, desc="features", enabled=show_progress):
        row, err = run_slide(f.stem, out / f.name, lambda: encode_slide(f, out / f.name, encoder, enc_attrs, dev, batch_size, workers,
                                                                          Path(slides) if slides else None, show_progress, dtype), locks)
        if row is not None:
            done.append(row)
        elif err is not None:
            failed.append((f.stem, err))
    wall = time.perf_counter() - t0
    n = sum(r["patches"] for r in done)
    summary = {"source": str(tiles.resolve()), "shard": str(shard), "claim": claim, "encoder": encoder_name,
               "feature_dim": dim, "dtype": dtype, "weights": weights or "random init (seeded)", "slides_found": len(files),
               "skipped_existing": len(files) - len(todo), "taken_by_other_jobs": len(todo) - len(done) - len(failed),
               "tiling_failed": len(reported_failures(tiles, "tiling")),
               "patches": n, "wall_s": round(wall, 3), "patches_per_s": round(n / wall, 1) if wall > 0 else None}
    errors_csv = write_report(out, "features", done, failed, summary, report_tag(shard, claim))
    return {**summary, "n_ok": len(done), "n_failed": len(failed), "failed": failed, "errors_csv": errors_csv}


def run_features(cfg) -> int:
    """CLI runner of ``fastmed wsi features``."""
    torch.manual_seed(cfg.seed)
    shard = start_job(cfg)
    res = extract_features(cfg.tiles, cfg.out, cfg.encoder, cfg.weights, cfg.device, cfg.batch_size, cfg.workers,
                           cfg.slides, cfg.overwrite, cfg.seed, cfg.progress, shard, cfg.claim, cfg.dtype)
    print(f"encoded {res['n_ok']} slide(s), {res['patches']} patches with {res['encoder']} ({res['feature_dim']} features, "
          f"{res['weights']}) in {res['wall_s']:.1f} s; {res['skipped_existing']} already done{job_note(res)}; output: {cfg.out}")
    if res["tiling_failed"]:
        print(f"  note: {res['tiling_failed']} slide(s) failed tiling and have no tiles (see {cfg.tiles}/errors*.csv)")
    return batch_exit_status(res)
