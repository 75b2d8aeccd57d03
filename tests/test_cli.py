"""The command line: help, version, option parsing and its errors."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass

import pytest

from fastmed.cfg.base import opt, parse_options
from fastmed.cli import main
from fastmed.errors import ConfigError


@dataclass(kw_only=True)
class _Cfg:
    data: str = opt(help="required path")
    epochs: int = opt(3, "epochs")
    lr: float = opt(0.1, "lr")
    resume: bool = opt(False, "resume")
    names: list[str] = opt([], "names")
    mode: str = opt("a", "mode", choices=("a", "b"))
    weights: str | None = opt(None, "optional path")


def test_help_lists_every_command_and_imports_no_torch():
    code = "import sys; from fastmed.cli import main; main(['--help']); print('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "polyp train" in out and "synth" in out and "demo" in out
    assert out.strip().endswith("TORCH False")


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("fastmed ")


def test_task_help_shows_types_and_defaults(capsys):
    assert main(["polyp", "train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--epochs" in out and "int" in out and "default: 10" in out and "--data" in out and "required" in out


def test_unknown_option_suggests(capsys):
    assert main(["polyp", "train", "--data", "x", "--epoch", "2"]) == 2
    assert "did you mean --epochs" in capsys.readouterr().err


def test_unknown_task_and_mode(capsys):
    assert main(["polip"]) == 2
    assert "did you mean 'polyp'" in capsys.readouterr().err
    assert main(["polyp", "trian"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_parse_forms_and_types(tmp_path):
    cfg = parse_options(_Cfg, ["data=/d", "--epochs", "5", "--lr=0.5", "--resume", "--names", "a,b", "--weights", "none"])
    assert (cfg.data, cfg.epochs, cfg.lr, cfg.resume, cfg.names, cfg.weights) == ("/d", 5, 0.5, True, ["a", "b"], None)
    assert parse_options(_Cfg, ["--data", "x", "--resume", "false"]).resume is False
    yml = tmp_path / "c.yaml"
    yml.write_text("data: /from/yaml\nepochs: 7\n")
    cfg = parse_options(_Cfg, ["--config", str(yml), "--epochs", "9"])
    assert (cfg.data, cfg.epochs) == ("/from/yaml", 9)


@pytest.mark.parametrize("args,msg", [
    (["--epochs", "2"], "missing required option(s): --data"),
    (["--data", "x", "--epochs", "two"], "expected int"),
    (["--data", "x", "--mode", "c"], "not one of a, b"),
    (["--data", "x", "stray"], "unexpected argument"),
])
def test_parse_errors(args, msg):
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        parse_options(_Cfg, args)


def test_yaml_unknown_key(tmp_path):
    yml = tmp_path / "c.yaml"
    yml.write_text("data: x\nepoch: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'epoch'; did you mean epochs"):
        parse_options(_Cfg, ["--config", str(yml)])
