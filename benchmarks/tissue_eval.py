"""Tissue detection: coverage of tissue and glass kept, old default vs new default vs CLAM's fixed threshold.

Cases (``fastmed.data.synthetic.slides.tissue_case``, mask scale = 4x downsampled):
the real IHC section (scikit-image's ``ihc.png``, DAB + pale hematoxylin) on
glass, and synthetic slides with ground truth: H&E, pale (faded), IHC-like, pen
marks (blue, green, black), dust + bubbles, uneven illumination. Synthetic rows: mean and worst over
``SEEDS`` slides. Detectors:

* old default: HSV saturation, median 7, Otsu (never below 8), closing 4
  (``TissueParams(method="saturation")``);
* new default: optical density above the slide's glass (``TissueParams()``);
* CLAM fixed: HSV saturation > 8 after median 7, closing 4: CLAM's documented
  defaults (``sthresh`` 8, ``mthresh`` 7, ``close`` 4, ``use_otsu`` False; mahmoodlab/CLAM
  README "Custom Default Segmentation Parameters" and ``create_patches_fp.py``).

All three share the same area filters (pieces under 64 px dropped, holes under
64 px filled). Also end to end: the real IHC section upsampled 4x on glass as a
pyramidal TIFF, ``fastmed wsi tile`` with the defaults (patch 224 at 0.5 µm/px,
bbox mode, mask at downsample 32): fraction of the clearly stained tissue inside
kept tiles. Accuracy only, no timing.

    .venv/bin/python benchmarks/tissue_eval.py

Writes ``benchmarks/results/tissue.json``, ``tissue.md`` and ``tissue_ihc_masks.png`` (the real IHC
and the pen case, old vs new default masks).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fastmed.data.synthetic.slides import CASE_GLASS, TISSUE_CASES, read_ihc_section, tissue_case, write_pyramid_tiff
from fastmed.wsi.tile import TileOptions, tile_slide
from fastmed.wsi.patch_file import read_patch_file
from fastmed.wsi.tissue import TissueParams, detect_tissue

RESULTS = Path(__file__).resolve().parent / "results"
SEEDS = 5
DETECTORS = {"old default (saturation Otsu)": TissueParams(method="saturation"),
             "new default (OD above glass)": TissueParams(),
             "CLAM fixed (saturation > 8)": TissueParams(method="saturation", threshold=9)}
ROWS = {"ihc_real": "real IHC (skimage ihc.png) on glass", "pale": "pale / faded H&E", "ihc": "IHC-like (DAB + pale hematoxylin)",
        "pen": "pen marks (blue, green, black)", "dust_bubbles": "dust + bubbles", "he": "H&E-like",
        "shading": "uneven light (6 % ramp), pale stain"}


def score(case, params: TissueParams) -> dict[str, float]:
    """Coverage of tissue, glass kept and (when the case has artefacts) artefact kept of one detector."""
    mask = detect_tissue(case.rgb, params).mask
    out = {"coverage": float(mask[case.tissue].mean()), "glass_kept": float(mask[case.glass].mean())}
    if case.artefact.any():
        out["artefact_kept"] = float(mask[case.artefact].mean())
    return out


def mask_level_table() -> dict:
    """Per case and detector: mean and worst of coverage / glass kept / artefact kept over the seeds."""
    assert set(ROWS) == set(TISSUE_CASES)
    table = {}
    for name in ROWS:
        seeds = range(1) if name == "ihc_real" else range(SEEDS)
        cases = [tissue_case(name, seed) for seed in seeds]
        table[name] = {}
        for det, params in DETECTORS.items():
            runs = [score(c, params) for c in cases]
            table[name][det] = {k: {"mean": float(np.mean([r[k] for r in runs])),
                                    "worst": float(min(r[k] for r in runs) if k == "coverage" else max(r[k] for r in runs))}
                                for k in runs[0]}
    return table


def tiled_ihc() -> dict[str, float]:
    """End to end: fraction of the IHC section's clearly stained tissue that lies inside kept tiles, per detector."""
    up = 4
    section = np.repeat(np.repeat(read_ihc_section(), up, 0), up, 1)  # 2048 px
    margin = 256
    img = np.broadcast_to(CASE_GLASS.astype(np.uint8), (section.shape[0] + 2 * margin, section.shape[1] + 2 * margin, 3)).copy()
    img[margin:-margin, margin:-margin] = section
    ds = 16
    small = img.reshape(img.shape[0] // ds, ds, img.shape[1] // ds, ds, 3).mean(axis=(1, 3))
    od = np.maximum(np.log10((CASE_GLASS + 1) / (small + 1)), 0).sum(axis=2)
    inside = np.zeros(od.shape, bool)
    inside[margin // ds:-margin // ds, margin // ds:-margin // ds] = True
    truth = ndimage.binary_opening(od >= 0.1, np.ones((3, 3), bool)) & inside
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        slide = write_pyramid_tiff(Path(tmp) / "ihc.tiff", img, mpp=0.5)
        for det, params in DETECTORS.items():
            folder = Path(tmp) / str(len(out))
            row = tile_slide(slide, folder, None, TileOptions(tissue=params))
            covered = np.zeros(od.shape, bool)
            ps = read_patch_file(folder / "ihc.h5")
            side = int(ps.attrs["size0"]) // ds
            for x, y in ps.coords:
                covered[y // ds:y // ds + side, x // ds:x // ds + side] = True
            out[det] = {"tiles": row["tiles"], "tissue_in_tiles": float(covered[truth].mean()),
                        "tissue_fraction": row["tissue_fraction"], "warning": row["tissue_warning"]}
    return out


def figure(path: Path) -> None:
    """Rows: the real IHC case, the pen case; columns: image, old-default mask, new-default mask.

    Detected = tinted green, tissue missed = red; the glass around the real section is cropped.
    """
    rows = []
    for name in ("ihc_real", "pen"):
        case = tissue_case(name)
        ys, xs = np.nonzero(~case.glass)
        crop = (slice(max(ys.min() - 12, 0), ys.max() + 13), slice(max(xs.min() - 12, 0), xs.max() + 13))
        row = [("image" if name == "ihc_real" else "pen marks", case.rgb[crop])]
        for det in ("old default (saturation Otsu)", "new default (OD above glass)"):
            mask = detect_tissue(case.rgb, DETECTORS[det]).mask
            img = case.rgb.astype(np.float32)
            img[mask] = 0.55 * img[mask] + 0.45 * np.array([40, 190, 40])
            img[case.tissue & ~mask] = [220, 30, 30]
            row.append((f"{det.split(' (')[0]}: {mask[case.tissue].mean():.1%} tissue, "
                        f"{mask[case.glass].mean():.1%} glass", img.astype(np.uint8)[crop]))
        rows.append(row)
    scale, pad, head = 2, 8, 16
    w = max(arr.shape[1] for row in rows for _, arr in row) * scale
    heights = [max(arr.shape[0] for _, arr in row) * scale for row in rows]
    sheet = Image.new("RGB", (3 * (w + pad) + pad, sum(heights) + len(rows) * (head + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for row, h in zip(rows, heights):
        for i, (title, arr) in enumerate(row):
            x = pad + i * (w + pad)
            sheet.paste(Image.fromarray(arr).resize((arr.shape[1] * scale, arr.shape[0] * scale), Image.NEAREST), (x, y + head))
            draw.text((x, y + 2), title, fill=(0, 0, 0))
        y += h + head + pad
    sheet.save(path, optimize=True)


def markdown(table: dict, tiled: dict) -> str:
    dets = list(DETECTORS)
    lines = ["# Tissue detection: old default vs new default vs CLAM's fixed threshold", "",
             "Mask-scale cases (`fastmed.data.synthetic.slides.tissue_case`): coverage = detected fraction of the tissue "
             "(real IHC: pixels with summed optical density >= 0.1 above the glass, after a 3x3 opening; synthetic: "
             "the renderer's ground truth), glass kept = detected fraction of the glass >= 2 px from tissue (pen, dust "
             f"and bubbles on it included). Synthetic rows: mean (worst) over {SEEDS} slides. Target of issue 16: "
             "coverage >= 95 %, glass kept <= 5 %. Saturation ignores brightness, so the pale and uneven-light "
             "cases are easy for it; they are there to guard the optical-density detector's weak spots.", "",
             "| case | " + " | ".join(f"{d}: coverage / glass kept" for d in dets) + " |",
             "|---|" + "---|" * len(dets)]

    def cell(v: dict, k: str) -> str:
        return f"{v[k]['mean']:.1%}" if v[k]["mean"] == v[k]["worst"] else f"{v[k]['mean']:.1%} ({v[k]['worst']:.1%})"

    for name, label in ROWS.items():
        lines.append(f"| {label} | " + " | ".join(f"{cell(table[name][d], 'coverage')} / {cell(table[name][d], 'glass_kept')}"
                                                   for d in dets) + " |")
    lines += ["", "Artefact pixels on the glass that were kept (part of \"glass kept\" above):", "",
              "| case | " + " | ".join(dets) + " |", "|---|" + "---|" * len(dets)]
    for name in ("pen", "dust_bubbles"):
        lines.append(f"| {ROWS[name]} | " + " | ".join(cell(table[name][d], "artefact_kept") for d in dets) + " |")
    lines += ["", "End to end: the real IHC section upsampled 4x (2048 px) on glass as a pyramidal TIFF, `wsi tile` "
              "defaults otherwise (patch 224 at 0.5 µm/px, bbox, mask at downsample 32, min tissue 0.25):", "",
              "| detector | tiles | clearly stained tissue inside kept tiles | low-tissue warning |", "|---|---|---|---|"]
    for det, r in tiled.items():
        lines.append(f"| {det} | {r['tiles']} | {r['tissue_in_tiles']:.1%} | {'yes' if r['warning'] else 'no'} |")
    lines += ["", "Figure: `tissue_ihc_masks.png`: the real IHC and the pen case, old and new default masks "
              "(green = detected, red = tissue missed).", ""]
    return "\n".join(lines)


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    table = mask_level_table()
    tiled = tiled_ihc()
    figure(RESULTS / "tissue_ihc_masks.png")
    (RESULTS / "tissue.json").write_text(json.dumps({"seeds": SEEDS, "mask_level": table, "tiled_ihc": tiled}, indent=1) + "\n")
    md = markdown(table, tiled)
    (RESULTS / "tissue.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
