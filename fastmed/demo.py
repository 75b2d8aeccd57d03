"""``fastmed demo``: synthesize data, run every task briefly, write REPORT.md.

Each task contributes one stage: a function ``run(ctx: DemoContext) ->
DemoSection`` named in ``STAGES``. Stages run in order, share ``ctx.artifacts``
(e.g. the distilled student's checkpoint for the export stage), and a stage
that fails is reported in REPORT.md with its error while the others still run;
the command then exits 1.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastmed.cfg.demo import DemoConfig
from fastmed.engine.atomic import atomic_write_text
from fastmed.errors import FastmedError

# (stage name, "module:function"); order matters (later stages may use earlier artifacts)
STAGES: list[tuple[str, str]] = [
    ("polyp", "fastmed.polyp.demo_stage:run"),
    ("polyp-gen", "fastmed.polyp.gen_demo_stage:run"),
    ("distill", "fastmed.distill.demo_stage:run"),
    ("seg-reweight", "fastmed.seg.reweight.demo_stage:run"),
    ("seg-contour", "fastmed.seg.contour.demo_stage:run"),
    ("wsi", "fastmed.wsi.demo_stage:run"),
    ("export", "fastmed.export.demo_stage:run"),  # keep last: ships the student and recognizer of earlier stages
]


@dataclass
class DemoContext:
    """What a stage gets: the synthetic data root, its own output folder, shared state."""

    data: Path          # root of the synthetic datasets (polyp/, seg/, slides/)
    root: Path          # the demo folder; a stage writes under root / <stage name>
    seed: int
    device: str
    progress: bool
    artifacts: dict[str, Any] = field(default_factory=dict)  # shared between stages

    def stage_dir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class DemoSection:
    """One stage's part of REPORT.md."""

    title: str
    summary: str = ""                                      # a sentence or two of markdown
    metrics: dict[str, Any] = field(default_factory=dict)  # name -> value, shown as a table
    images: list[Path] = field(default_factory=list)       # PNGs linked from the report
    markdown: str = ""                                     # any extra markdown (tables)


def _load(spec: str):
    import importlib

    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def render_report(sections: list[tuple[str, DemoSection | None, float, str | None]], root: Path, total_s: float) -> str:
    """REPORT.md text from (stage, section or None, seconds, error or None) rows."""
    lines = ["# fastmed demo report", "", f"Total wall time: {total_s:.1f} s.", "", "| stage | status | time (s) |", "|---|---|---|"]
    for name, _, secs, err in sections:
        lines.append(f"| {name} | {'ok' if err is None else 'FAILED'} | {secs:.1f} |")
    for name, sec, secs, err in sections:
        lines += ["", f"## {sec.title if sec else name}", ""]
        if err is not None:
            lines += ["**Failed:**", "", "```", err.strip(), "```"]
            continue
        if sec.summary:
            lines += [sec.summary, ""]
        if sec.metrics:
            lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in sec.metrics.items()] + [""]
        if sec.markdown:
            lines += [sec.markdown, ""]
        for img in sec.images:
            rel = Path(img).resolve().relative_to(root.resolve()) if Path(img).resolve().is_relative_to(root.resolve()) else img
            lines.append(f"![{Path(img).stem}]({rel})")
    return "\n".join(lines) + "\n"


def run_demo(cfg: DemoConfig) -> int:
    """Run the demo stages; write ``<out>/REPORT.md``; return 0 if all stages passed."""
    from fastmed.data.synthetic import make_synthetic

    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    unknown = [s for s in cfg.stages if s not in {n for n, _ in STAGES}]
    if unknown:
        raise FastmedError(f"unknown demo stage(s) {unknown}; stages: {', '.join(n for n, _ in STAGES)}")
    t_all = time.perf_counter()
    print(f"[demo] writing synthetic data to {root / 'data'}")
    data = make_synthetic(root / "data", seed=cfg.seed, size="demo")
    ctx = DemoContext(data=data, root=root, seed=cfg.seed, device=cfg.device, progress=cfg.progress)
    rows: list[tuple[str, DemoSection | None, float, str | None]] = []
    for name, spec in STAGES:
        if cfg.stages and name not in cfg.stages:
            continue
        print(f"[demo] stage {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            section, err = _load(spec)(ctx), None
        except Exception:  # a failed stage is reported, the others still run
            section, err = None, traceback.format_exc()
            print(f"[demo] stage {name} FAILED:\n{err}")
        secs = time.perf_counter() - t0
        rows.append((name, section, secs, err))
        print(f"[demo] stage {name} {'ok' if err is None else 'FAILED'} in {secs:.1f} s", flush=True)
    total = time.perf_counter() - t_all
    report = atomic_write_text(root / "REPORT.md", render_report(rows, root, total))
    print(f"[demo] done in {total:.1f} s; report: {report}")
    return 0 if all(err is None for *_, err in rows) else 1
