"""Every option a command offers is read by the code that runs it (no option a command ignores).

Training and inference commands are checked dynamically: each runs once on the
tiny synthetic data with a config whose class records every field read outside
``fastmed/cfg`` (validation) and ``dataclasses`` (``asdict`` for config.yaml),
and every field must have been read. Commands too slow or too
hardware-bound to run here (export, bench, demo, synth, the wsi pipeline) are
checked statically: every field appears as ``cfg.<name>`` in the runner's
module or in a fastmed module it imports.
"""
from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import sys
from pathlib import Path

import pytest

import fastmed
from fastmed.cfg.base import Command, all_commands, parse_options

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see tests/conftest.py

_IGNORED_CALLERS = (str(Path(fastmed.__file__).parent / "cfg"), dataclasses.__file__)

# (command, variant, options) in run order: later runs use earlier runs' checkpoints ({name} placeholders)
_FAST = ["--device", "cpu", "--progress", "false"]
DYNAMIC = [
    ("polyp train", None, ["--data", "{polyp}", "--arch", "mobilenet_v3_small", "--image-size", "16", "--epochs", "1",
                           "--batch-size", "16", "--out", "{tmp}/polyp", *_FAST]),
    ("polyp predict", None, ["--weights", "{tmp}/polyp/weights/best.pt", "--source", "{polyp}/val", "--out", "{tmp}/pp",
                             "--device", "cpu"]),
    ("distill train", None, ["--data", "{polyp}", "--teacher", "{tmp}/polyp/weights/best.pt", "--image-size", "32",
                             "--epochs", "1", "--batch-size", "16", "--out", "{tmp}/distill", *_FAST]),
    ("distill predict", None, ["--weights", "{tmp}/distill/weights/best.pt", "--source", "{polyp}/val", "--out", "{tmp}/dp",
                               "--device", "cpu"]),
    ("polyp augment", None, ["--data", "{polyp}", "--epochs", "1", "--per-class", "2", "--steps-per-epoch", "1",
                             "--image-size", "16", "--base", "4", "--out", "{tmp}/augment", *_FAST]),
    ("polyp generate", None, ["--weights", "{tmp}/augment/weights/best.pt", "--data", "{polyp}", "--out", "{tmp}/gen", *_FAST]),
    ("polyp pretrain", None, ["--data", "{polyp}", "--arch", "mobilenet_v3_small", "--image-size", "16", "--epochs", "1",
                              "--batch-size", "16", "--out", "{tmp}/pretrain", *_FAST]),
    ("seg train", "reweight", ["--data", "{seg}/train", "--epochs", "1", "--base-width", "4", "--depth", "2", "--image-size", "16",
                               "--n-exact", "4", "--tau", "1", "--batch-size", "4", "--overlays", "1", "--out", "{tmp}/rw", *_FAST]),
    ("seg train", "contour", ["--method", "contour", "--data", "{seg}/train", "--n-train", "4", "--epochs", "1",
                              "--base-width", "4", "--depth", "2", "--image-size", "16", "--batch-size", "8",
                              "--overlays", "1", "--out", "{tmp}/ct", *_FAST]),
    ("seg predict", None, ["--weights", "{tmp}/ct/weights/best.pt", "--source", "{seg}/test/images", "--out", "{tmp}/sp", *_FAST]),
    ("predict", "images", ["--weights", "{tmp}/polyp/weights/best.pt", "--source", "{polyp}/val", "--out", "{tmp}/p1",
                           "--device", "cpu"]),
    ("predict", "stream", ["--weights", "{tmp}/polyp/weights/best.pt", "--source", "{polyp}/val/normal", "--stream",
                           "--max-frames", "3", "--save-video", "{tmp}/p2.mp4", "--out", "{tmp}/p2", "--device", "cpu"]),
]
# the two `predict` runs cover its image and stream modes together
STATIC = {"export", "bench", "demo", "synth", "wsi tile", "wsi features", "wsi train", "wsi predict", "wsi heatmap",
          "wsi status"}


def _command(name: str) -> Command:
    return next(c for c in all_commands() if c.name == name)


def recording(cls: type) -> type:
    """A subclass of the config dataclass ``cls`` whose ``READ`` set collects the fields code reads."""
    names = {f.name for f in dataclasses.fields(cls)}
    read: set[str] = set()

    def __getattribute__(self, name):
        if name in names and not sys._getframe(1).f_code.co_filename.startswith(_IGNORED_CALLERS):
            read.add(name)
        return object.__getattribute__(self, name)

    return type(f"Recording{cls.__name__}", (cls,), {"__getattribute__": __getattribute__, "READ": read})


@pytest.fixture(scope="module")
def reads(synth_root, tmp_path_factory):
    """``{(command, variant): (fields, fields read)}`` of one run of every DYNAMIC entry."""
    tmp = tmp_path_factory.mktemp("reads")
    places = {"polyp": synth_root / "polyp", "seg": synth_root / "seg", "tmp": tmp}
    out = {}
    for name, variant, args in DYNAMIC:
        cmd = _command(name)
        args = [a.format(**places) for a in args]
        cls = recording(cmd.config_for(args))
        cmd.load_runner()(parse_options(cls, args))
        earlier = set().union(*(r for (n, _), (_, r) in out.items() if n == name))  # the modes of one command
        out[(name, variant)] = ({f.name for f in dataclasses.fields(cls)}, cls.READ | earlier)
    return out


def test_every_command_is_checked():
    dynamic = {name for name, _, _ in DYNAMIC}
    for cmd in all_commands():
        assert cmd.name in dynamic | STATIC, f"{cmd.name}: add it to DYNAMIC or STATIC"
    for cmd in all_commands():
        for value, _ in cmd.variants:
            assert (cmd.name, value) in {(n, v) for n, v, _ in DYNAMIC}, f"{cmd.name} --{cmd.selector} {value} is not run"


@pytest.mark.parametrize("name,variant", [(n, v) for n, v, _ in DYNAMIC if n != "predict" or v == "stream"])
def test_runner_reads_every_option(reads, name, variant):
    fields, read = reads[(name, variant)]
    assert fields - read == set(), f"`fastmed {name}` offers options its runner never reads"


def test_recorder_ignores_asdict_and_validation():
    from fastmed.cfg.polyp import PolypPredictConfig

    cls = recording(PolypPredictConfig)
    cfg = parse_options(cls, ["--weights", "w.pt", "--source", "s"])
    dataclasses.asdict(cfg)
    assert cls.READ == set()
    assert cfg.batch_size == 64 and cls.READ == {"batch_size"}


def _runner_sources(runner: str) -> str:
    """The runner function, the module's functions and classes it uses (transitively), and the fastmed modules they import."""
    module_name, func = runner.split(":")
    tree = ast.parse(Path(importlib.import_module(module_name).__file__).read_text(encoding="utf-8"))
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    used, todo = set(), [func]
    while todo:
        name = todo.pop()
        used.add(name)
        todo += [n.id for n in ast.walk(defs[name]) if isinstance(n, ast.Name) and n.id in defs and n.id not in used]
    nodes = [defs[name] for name in sorted(used)]
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom)] + \
        [n for f in nodes for n in ast.walk(f) if isinstance(n, ast.ImportFrom)]
    sources = [ast.unparse(n) for n in nodes]
    for dep in {n.module for n in imports if n.module and n.module.startswith("fastmed.") and not n.module.startswith("fastmed.cfg")}:
        sources.append(Path(importlib.import_module(dep).__file__).read_text(encoding="utf-8"))
    return "\n".join(sources)


@pytest.mark.parametrize("name", sorted(STATIC))
def test_runner_names_every_option(name):
    cmd = _command(name)
    source = _runner_sources(cmd.runner)
    named = set(re.findall(r"\bcfg\.(\w+)", source)) | set(re.findall(r"getattr\((?:self\.)?cfg, [\"'](\w+)", source))
    for cls in cmd.configs():
        unread = {f.name for f in dataclasses.fields(cls)} - named
        assert unread == set(), f"`fastmed {name}` offers options its runner never names: {sorted(unread)}"
