from fastmed.demo import STAGES, DemoContext


def test_export_stage_is_last_and_skips_missing_checkpoints(tmp_path):
    from fastmed.export.demo_stage import run

    assert STAGES[-1] == ("export", "fastmed.export.demo_stage:run")
    ctx = DemoContext(data=tmp_path, root=tmp_path, seed=0, device="cpu", progress=False,
                      artifacts={"student": str(tmp_path / "missing.pt")})
    section = run(ctx)
    assert "distilled student: skipped" in section.summary and "polyp recognizer: skipped" in section.summary
    assert section.metrics == {}
