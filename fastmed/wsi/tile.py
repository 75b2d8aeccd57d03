"""``fastmed wsi tile``: slides → tissue mask → tile grid → per-slide HDF5 + mask PNG.

Slides are processed in parallel (processes); a slide that cannot be opened
or read is skipped and listed in ``<out>/errors.csv`` while the others
finish. Existing ``<out>/<slide_id>.h5`` files are kept unless ``overwrite``
(files are written atomically, so an existing file is a finished slide).
Slides whose ids clash (``s.tif`` / ``s.tiff``) are refused and reported
(``slide_io.unique_slides``); annotation regions outside their slide and
low tissue are warned about (``warnings`` of the summary, printed).
Several jobs split a folder with ``shard`` / ``claim`` (``fastmed.wsi.shard``);
each writes its own report.
"""
from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastmed.engine.progress import progress
from fastmed.wsi.annotations import (DEFAULT_EXCLUDE, find_annotation, outside_slide_warning, positive_regions, rasterize,
                                     read_annotations)
from fastmed.wsi.batch_report import batch_exit_status, write_report
from fastmed.wsi.patch_file import PatchSet, write_patch_file
from fastmed.wsi.shard import Shard, SlideLocks, job_note, report_tag, run_slide, start_job
from fastmed.wsi.slide_io import (find_slides, level_for_downsample, open_slide, patch_geometry, read_level, read_patch, slide_id,
                                  unique_slides)
from fastmed.wsi.tiling import coverage, grid_coords
from fastmed.wsi.tissue import TissueParams, detect_tissue, low_tissue_warning


@dataclass(frozen=True)
class TileOptions:
    """Everything one slide's tiling needs (picklable for worker processes)."""

    patch_size: int = 224
    mpp: float | None = 0.5
    assume_mpp: float | None = None
    step: int | None = None           # stride in output pixels (None = patch_size)
    mode: str = "bbox"
    min_tissue: float = 0.25
    mask_downsample: float = 32.0
    tissue: TissueParams = TissueParams()
    min_tissue_patches: float = 1.0   # tissue pieces smaller than this many patches are dropped
    max_hole_patches: float = 1.0     # holes smaller than this many patches are filled
    exclude_classes: tuple[str, ...] = DEFAULT_EXCLUDE
    verify: bool = False              # read every tile once (finds corrupt tiles; slower)


def tile_slide(path: Path, out: Path, annotations: Path | None, opts: TileOptions) -> dict[str, Any]:
    """Tile one slide; write ``out/<id>.h5`` and ``out/masks/<id>.png``; return a summary row."""
    t0 = time.perf_counter()
    sid = slide_id(path)
    slide = open_slide(path)
    try:
        width, height = slide.level_dimensions[0]
        geom = patch_geometry(slide, opts.patch_size, opts.mpp, opts.assume_mpp)
        mask_level = level_for_downsample(slide, opts.mask_downsample)
        mask_ds = float(slide.level_downsamples[mask_level])
        thumb = read_level(slide, mask_level)
        patch_px = (geom.size0 / mask_ds) ** 2  # one patch's area in mask pixels
        params = TissueParams(**{**opts.tissue.__dict__, "min_area": opts.min_tissue_patches * patch_px,
                                 "max_hole_area": opts.max_hole_patches * patch_px})
        tissue = detect_tissue(thumb, params)
        mask = tissue.mask
        step0 = max(1, int(round((opts.step or opts.patch_size) * geom.size0 / geom.patch_size)))
        coords = grid_coords(width, height, geom.size0, step0, opts.mode, mask, mask_ds)
        frac = coverage(mask, coords, geom.size0, mask_ds)
        keep = frac >= max(opts.min_tissue, 1e-6)
        coords, frac = coords[keep], frac[keep]
        label_fraction, ann_file, ann_warning = None, find_annotation(annotations, sid), None
        if ann_file is not None:
            regions = read_annotations(ann_file)
            ann_warning = outside_slide_warning(ann_file, regions, width, height)
            regions = positive_regions(regions, opts.exclude_classes)
            label_ds = max(1.0, geom.size0 / 16)
            label_fraction = coverage(rasterize(regions, width, height, label_ds), coords, geom.size0, label_ds)
        if opts.verify:
            for x, y in coords:
                read_patch(slide, x, y, geom)
        attrs = {"slide_id": sid, "slide_path": str(path.resolve()), "level": geom.level, "downsample": geom.downsample,
                 "read_size": geom.read_size, "patch_size": geom.patch_size, "size0": geom.size0,
                 "mpp": geom.mpp if geom.mpp is not None else float("nan"), "mpp_source": geom.mpp_source,
                 "mode": opts.mode, "width": width, "height": height, "annotation": str(ann_file or "")}
        write_patch_file(out / f"{sid}.h5", PatchSet(coords, attrs, frac, label_fraction))
        _save_mask_png(out / "masks" / f"{sid}.png", thumb, mask, coords, geom.size0 / mask_ds, mask_ds)
    finally:
        slide.close()
    n_pos = int((label_fraction > 0).sum()) if label_fraction is not None else None
    return {"slide": sid, "tiles": int(len(coords)), "positive_tiles": n_pos, "level": geom.level,
            "mpp_source": geom.mpp_source, "tissue_fraction": round(tissue.tissue_fraction, 4),
            "tissue_threshold": round(tissue.threshold, 4), "tissue_warning": low_tissue_warning(tissue),
            "annotation_warning": ann_warning, "seconds": round(time.perf_counter() - t0, 3)}


def _save_mask_png(path: Path, thumb: np.ndarray, mask: np.ndarray, coords: np.ndarray, side: float, ds: float) -> None:
    """Thumbnail with the tissue tinted green and kept tiles outlined."""
    from PIL import Image, ImageDraw

    img = thumb.astype(np.float32)
    img[mask] = 0.6 * img[mask] + 0.4 * np.array([60, 200, 60])
    pil = Image.fromarray(img.astype(np.uint8))
    scale = max(1, int(np.ceil(512 / max(pil.size))))  # small levels are enlarged so outlines are visible
    pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(pil)
    for x, y in coords:
        x0, y0 = x / ds * scale, y / ds * scale
        draw.rectangle([x0, y0, x0 + side * scale - 1, y0 + side * scale - 1], outline=(30, 30, 160))
    path.parent.mkdir(parents=True, exist_ok=True)
    pil.save(path, compress_level=1)  # noisy tissue texture: fast zlib level


def _run_tile(path: Path, out: Path, annotations: Path | None, opts: TileOptions,
              claim: bool) -> tuple[dict[str, Any] | None, str | None]:
    """``tile_slide`` through ``run_slide``: the error text instead of raising; ``(None, None)`` when another job has it."""
    sid = slide_id(path)
    return run_slide(sid, out / f"{sid}.h5", lambda: tile_slide(path, out, annotations, opts), SlideLocks(out) if claim else None)


def tile_folder(slides: str | Path, out: str | Path, opts: TileOptions, annotations: str | Path | None = None,
                workers: int = 2, overwrite: bool = False, show_progress: bool = True, shard: Shard = Shard(),
                claim: bool = False) -> dict[str, Any]:
    """Tile the slides of ``slides`` in ``shard``; return the summary (also ``out/tiling[.tag].json``)."""
    slides, out = Path(slides), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if annotations is None and (slides / "annotations").is_dir():
        annotations = slides / "annotations"
    paths = find_slides(slides)
    mine = shard.select([slide_id(p).casefold() for p in paths])  # by case-folded id: a clash stays in one shard
    paths = [p for p in paths if slide_id(p).casefold() in mine]
    usable, failed = unique_slides(paths)  # clashing or unusable slide ids are reported, never tiled
    todo = [p for p in usable if overwrite or not (out / f"{slide_id(p)}.h5").exists()]
    done: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    ann = Path(annotations) if annotations else None
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_run_tile, p, out, ann, opts, claim): p for p in todo}
            for fut in progress(as_completed(futures), desc="tile", total=len(futures), enabled=show_progress):
                _collect(futures[fut], *fut.result(), done, failed)
    else:
        for p in progress(todo, desc="tile", enabled=show_progress):
            _collect(p, *_run_tile(p, out, ann, opts, claim), done, failed)
    wall = time.perf_counter() - t0
    tiles = sum(r["tiles"] for r in done)
    summary = {"source": str(slides.resolve()), "shard": str(shard), "claim": claim, "slides_found": len(paths),
               "skipped_existing": len(usable) - len(todo), "taken_by_other_jobs": len(todo) - len(done) - _n_run_failed(failed, todo),
               "tiles": tiles, "wall_s": round(wall, 3), "tiles_per_s": round(tiles / wall, 1) if wall > 0 else None,
               "mode": opts.mode, "patch_size": opts.patch_size, "mpp": opts.mpp, "verify": opts.verify}
    errors_csv = write_report(out, "tiling", sorted(done, key=lambda r: r["slide"]), sorted(failed), summary, report_tag(shard, claim))
    return {**summary, "n_ok": len(done), "n_failed": len(failed), "failed": failed, "errors_csv": errors_csv,
            "warnings": [f"{r['slide']}: {w}" for r in done for w in (r["tissue_warning"], r["annotation_warning"]) if w]}


def _n_run_failed(failed: list[tuple[str, str]], todo: list[Path]) -> int:
    """How many of ``todo`` failed (``failed`` also holds the slides refused before tiling)."""
    names = {p.name for p in todo}
    return sum(name in names for name, _ in failed)


def _collect(path: Path, row, err, done: list, failed: list) -> None:
    if row is not None:
        done.append(row)
    elif err is not None:
        failed.append((path.name, err))


def run_tile(cfg) -> int:
    """CLI runner of ``fastmed wsi tile``."""
    tissue = TissueParams(method=cfg.tissue_method, threshold=cfg.tissue_threshold, median=cfg.median, close=cfg.close)
    opts = TileOptions(patch_size=cfg.patch_size, mpp=cfg.mpp, assume_mpp=cfg.assume_mpp, step=cfg.step, mode=cfg.mode,
                       min_tissue=cfg.min_tissue, mask_downsample=cfg.mask_downsample, tissue=tissue,
                       min_tissue_patches=cfg.min_tissue_patches, max_hole_patches=cfg.max_hole_patches,
                       exclude_classes=tuple(cfg.exclude_classes), verify=cfg.verify)
    shard = start_job(cfg)
    res = tile_folder(cfg.slides, cfg.out, opts, cfg.annotations, cfg.workers, cfg.overwrite, cfg.progress, shard, cfg.claim)
    print(f"tiled {res['n_ok']} slide(s), {res['tiles']} tiles in {res['wall_s']:.1f} s "
          f"({res['tiles_per_s']} tiles/s); {res['skipped_existing']} already done{job_note(res)}; output: {cfg.out}")
    for line in res["warnings"]:
        print(f"  warning: {line}")
    return batch_exit_status(res)
