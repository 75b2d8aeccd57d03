"""Slides across jobs: ``--shard k/n`` and ``--claim`` jobs running at the same time, their reports, ``wsi status``."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastmed.cli import main
from fastmed.errors import ConfigError
from fastmed.wsi.patch_file import read_patch_file
from fastmed.wsi.shard import Shard, SlideLocks, parse_shard

TILE = ["--patch-size", "64", "--mask-downsample", "16", "--progress", "false", "--workers", "1"]
FEATURES = ["--encoder", "tiny", "--device", "cpu", "--progress", "false"]
JOB_ENV = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_STEP", "RANK", "WORLD_SIZE")


def run_at_once(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Start every ``fastmed`` command as its own process, then wait for all (they run at the same time)."""
    env = {k: v for k, v in os.environ.items() if k not in JOB_ENV}
    env.update(OMP_NUM_THREADS="1", FASTMED_PROGRESS="0")
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; from fastmed.cli import main; sys.exit(main(sys.argv[1:]))", *c],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for c in commands]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=300), p.stdout.read()) for p in procs]


@pytest.fixture(scope="module")
def slides(synth_root, tmp_path_factory):
    """The four synthetic slides, their annotations and one file that is no slide."""
    folder = tmp_path_factory.mktemp("shard") / "slides"
    shutil.copytree(synth_root / "slides", folder)
    (folder / "broken.tiff").write_text("not a slide")
    return folder


def errors_of(folder, pattern: str) -> list[str]:
    return [r["slide"] for p in sorted(folder.glob(pattern)) for r in csv.DictReader(open(p, encoding="utf-8"))]


def slides_of(folder, pattern: str) -> list[list[str]]:
    return [[r["slide"] for r in json.loads(p.read_text())["slides"]] for p in sorted(folder.glob(pattern))]


def test_two_shards_at_once_equal_one_unsharded_run(slides, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(ref / "tiles"), *TILE]) == 0
    assert main(["wsi", "features", "--tiles", str(ref / "tiles"), "--out", str(ref / "features"), *FEATURES]) == 0
    tiles, feats = tmp_path / "tiles", tmp_path / "features"
    runs = run_at_once(*(["wsi", "tile", "--slides", str(slides), "--out", str(tiles), "--shard", f"{k}/2", *TILE] for k in (0, 1)))
    assert [r.returncode for r in runs] == [0, 0], [r.stdout for r in runs]
    runs = run_at_once(*(["wsi", "features", "--tiles", str(tiles), "--out", str(feats), "--shard", f"{k}/2", *FEATURES]
                         for k in (0, 1)))
    assert [r.returncode for r in runs] == [0, 0], [r.stdout for r in runs]
    assert all("1 slide(s) failed tiling" in r.stdout for r in runs)  # the next stage reads both tiling reports

    names = sorted(p.name for p in (ref / "features").glob("*.h5"))
    assert names == [f"slide_00{i}.h5" for i in range(4)]
    for stage, ref_dir, dir_ in (("tiling", ref / "tiles", tiles), ("features", ref / "features", feats)):
        assert sorted(p.name for p in dir_.glob("*.h5")) == names
        per_shard = slides_of(dir_, f"{stage}.shard-*-of-2.json")
        assert len(per_shard) == 2 and all(per_shard)                      # both shards did work
        assert sorted(sum(per_shard, [])) == [n[:-3] for n in names]       # each slide written by exactly one shard
        assert not (dir_ / f"{stage}.json").exists() and not (dir_ / "errors.csv").exists()
        for name in names:
            a, b = read_patch_file(ref_dir / name), read_patch_file(dir_ / name)
            np.testing.assert_array_equal(a.coords, b.coords)
            np.testing.assert_array_equal(a.label_fraction, b.label_fraction)
            if stage == "features":
                scale = np.abs(a.features).max()
                np.testing.assert_allclose(b.features, a.features, rtol=1e-5, atol=1e-5 * scale)
    assert errors_of(tiles, "errors.shard-*.csv") == ["broken.tiff"]  # reported once, by the shard that owns it
    assert errors_of(feats, "errors.shard-*.csv") == []

    capsys.readouterr()
    assert main(["wsi", "status", "--folder", str(tiles)]) == 1  # a slide failed
    out = capsys.readouterr().out
    assert "5 slide(s): 4 done, 1 failed, 0 running, 0 pending" in out and "failed broken: cannot open slide" in out
    assert main(["wsi", "status", "--folder", str(feats)]) == 0
    assert "4 slide(s): 4 done, 0 failed, 0 running, 0 pending" in capsys.readouterr().out


def test_claiming_jobs_at_once_share_the_slides_and_keep_a_failed_lock(slides, tmp_path, capsys):
    tiles = tmp_path / "tiles"
    cmd = ["wsi", "tile", "--slides", str(slides), "--out", str(tiles), "--claim", *TILE]
    runs = run_at_once(cmd, cmd)
    assert [r.returncode for r in runs] == [0, 0], [r.stdout for r in runs]
    per_job = slides_of(tiles, "tiling.*.json")
    assert len(per_job) == 2 and sorted(sum(per_job, [])) == [f"slide_00{i}" for i in range(4)]  # no slide twice
    assert errors_of(tiles, "errors.*.csv") == ["broken.tiff"]       # the other job skipped the failed slide's lock
    assert list(SlideLocks(tiles).held()) == ["broken"] and "error" in SlideLocks(tiles).held()["broken"]
    summaries = [json.loads(p.read_text()) for p in sorted(tiles.glob("tiling.*.json"))]
    assert [sum(s[k] for s in summaries) for k in ("n_ok", "n_failed")] == [4, 1] and all(s["claim"] for s in summaries)

    capsys.readouterr()
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(tiles), "--claim", *TILE]) == 0  # lock kept: not retried
    assert "1 taken by other jobs" in capsys.readouterr().out
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(tiles), "--claim", "--stale-lock-hours", "0", *TILE]) == 0
    out = capsys.readouterr().out
    assert "cleared 1 stale lock(s)" in out and "skipped broken.tiff" in out  # retried after clearing


def test_a_dead_jobs_lock_blocks_its_slide_until_cleared(slides, tmp_path, capsys):
    tiles = tmp_path / "tiles"
    locks = SlideLocks(tiles)
    assert locks.claim("slide_002") and not locks.claim("slide_002")  # O_EXCL: the second claim fails
    lock = json.loads(locks.path("slide_002").read_text())
    assert {"host", "pid", "time"} <= set(lock) and lock["pid"] == os.getpid()
    locks.path("slide_002").write_text(json.dumps({**lock, "time": lock["time"] - 3 * 3600}))  # a job that died 3 h ago
    args = ["wsi", "tile", "--slides", str(slides), "--out", str(tiles), "--claim", *TILE]
    assert main(args) == 0
    assert not (tiles / "slide_002.h5").exists() and (tiles / "slide_001.h5").exists()
    capsys.readouterr()
    assert main(["wsi", "status", "--folder", str(tiles), "--list-pending"]) == 1
    assert "3 done, 1 failed, 1 running, 0 pending" in capsys.readouterr().out
    assert main([*args, "--stale-lock-hours", "4"]) == 0 and not (tiles / "slide_002.h5").exists()  # 3 h: not stale yet
    assert main([*args, "--stale-lock-hours", "2"]) == 0 and (tiles / "slide_002.h5").exists()


def test_shard_from_the_command_line_or_the_environment():
    assert parse_shard("1/4") == Shard(1, 4)
    assert Shard(1, 4).select([f"s{i}" for i in (9, 0, 3, 5, 1, 2, 4)]) == {"s1", "s5"}  # sorted s0..s5,s9: 2nd and 6th
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "RANK": "0", "WORLD_SIZE": "2"}) == Shard(3, 4)
    assert parse_shard(None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2",
                              "SLURM_ARRAY_TASK_COUNT": "3"}) == Shard(2, 3)  # --array=1-5:2
    assert parse_shard(None, {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(1, 2)
    assert parse_shard(None, {}) == Shard(0, 1)
    for bad in ("2/2", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "shard 3/2"),
    (["--claim", "--overwrite"], "--claim and --overwrite exclude each other"),
    (["--stale-lock-hours", "-1"], "--stale-lock-hours must be >= 0"),
])
def test_job_options_are_checked(slides, tmp_path, capsys, args, message):
    assert main(["wsi", "tile", "--slides", str(slides), "--out", str(tmp_path / "t"), *args, *TILE]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
