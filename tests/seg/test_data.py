import shutil

import pytest
import torch

from fastmed.errors import DataError
from fastmed.seg.data import SegDataset, scan_seg_split, seg_splits


def test_scan_pairs_all_folders(synth_root):
    scan = scan_seg_split(synth_root / "seg" / "train")
    assert len(scan.items) > 0 and not scan.skipped
    it = scan.items[0]
    assert it.mask and it.rough and it.instances and it.contours
    assert it.meta["rough_wrong"] in ("0", "1")
    assert set(seg_splits(synth_root / "seg")) == {"train", "val", "test"}


def test_scan_skips_and_reports_bad_items(synth_root, tmp_path):
    split = tmp_path / "train"
    shutil.copytree(synth_root / "seg" / "train", split)
    first = sorted((split / "images").iterdir())[0]
    first.write_bytes(b"not a png")
    (split / "masks" / "img_0001.png").write_bytes(b"\x89PNG broken")
    scan = scan_seg_split(split)
    bad = {p.stem for p, _ in scan.skipped}
    assert bad == {first.stem, "img_0001"}
    assert "skipped" in scan.report()
    assert all(it.id not in bad for it in scan.items)


def test_dataset_tensors(synth_root):
    items = scan_seg_split(synth_root / "seg" / "train").items
    ds = SegDataset(items, image_size=32, label="rough", augment=True)
    s = ds[2]
    assert s["image"].shape == (3, 32, 32) and s["mask"].shape == (1, 32, 32)
    assert set(torch.unique(s["mask"]).tolist()) <= {0.0, 1.0}
    assert s["index"] == 2
    assert "mask" not in SegDataset(items[:2], 32, label="none")[0]


def test_missing_folder_and_missing_masks(tmp_path, synth_root):
    with pytest.raises(DataError, match="no images"):
        scan_seg_split(tmp_path)
    with pytest.raises(DataError):
        seg_splits(tmp_path / "nope")
    items = scan_seg_split(synth_root / "seg" / "train").items
    items[0].rough = None
    with pytest.raises(DataError, match="rough_masks"):
        SegDataset(items, 32, label="rough")
