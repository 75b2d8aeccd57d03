"""The demo frame: stages run in order, a failed stage is reported and the rest still run."""
from __future__ import annotations

import pytest

import fastmed.demo as demo
from fastmed.cfg.demo import DemoConfig
from fastmed.errors import FastmedError


def _ok(ctx):
    ctx.artifacts["seen"] = True
    path = ctx.stage_dir("ok") / "plot.png"
    path.write_bytes(b"png")
    return demo.DemoSection(title="OK stage", summary="did it", metrics={"acc": 0.5}, images=[path])


def _boom(ctx):
    raise RuntimeError("stage exploded")


def _after(ctx):
    assert ctx.artifacts["seen"]
    return demo.DemoSection(title="After")


@pytest.fixture
def fake_stages(monkeypatch):
    monkeypatch.setattr(demo, "STAGES", [("ok", f"{__name__}:_ok"), ("boom", f"{__name__}:_boom"), ("after", f"{__name__}:_after")])
    monkeypatch.setattr("fastmed.data.synthetic.make_synthetic", lambda root, **kw: root)


def test_failed_stage_is_reported_and_others_run(tmp_path, fake_stages):
    assert demo.run_demo(DemoConfig(out=str(tmp_path))) == 1
    report = (tmp_path / "REPORT.md").read_text()
    assert "| ok | ok |" in report and "| boom | FAILED |" in report and "| after | ok |" in report
    assert "stage exploded" in report and "| acc | 0.5 |" in report and "](ok/plot.png)" in report


def test_stage_selection(tmp_path, fake_stages):
    assert demo.run_demo(DemoConfig(out=str(tmp_path), stages=["ok"])) == 0
    assert "boom" not in (tmp_path / "REPORT.md").read_text()
    with pytest.raises(FastmedError, match="unknown demo stage"):
        demo.run_demo(DemoConfig(out=str(tmp_path), stages=["nope"]))


def test_stages_use_the_trainers_returned_summary_not_their_run_files():
    """A stage reads a trainer's results from the returned ``RunSummary``, never back from its run folder."""
    import importlib
    import inspect

    for name, spec in demo.STAGES:
        source = inspect.getsource(importlib.import_module(spec.split(":")[0]))
        for run_file in ("metrics.jsonl", "summary.json", "config.yaml", '"weights" / "best.pt"', "/weights/best.pt"):
            assert run_file not in source, f"stage {name} reads {run_file}"
