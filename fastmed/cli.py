"""``fastmed TASK [MODE] [--option value ...]`` — a thin layer over the Python API.

The command table comes from ``fastmed.cfg`` (standard library only), so
``fastmed --help`` answers without importing torch; a command's code is
imported only when it runs.
"""
from __future__ import annotations

import dataclasses
import difflib
import shlex
import sys
from typing import Sequence

from fastmed._version import __version__
from fastmed.cfg.base import Command, all_commands, format_help
from fastmed.errors import FastmedError, RunInterrupted


def _overview(commands: list[Command]) -> str:
    lines = [
        f"fastmed {__version__} — train medical-imaging recognizers fast and ship them to the edge",
        "",
        "usage: fastmed TASK [MODE] [--option value ...]   (or option=value)",
        "       fastmed TASK [MODE] --help                 options with types and defaults",
        "       fastmed --version",
        "",
        "commands:",
    ]
    for c in commands:
        lines.append(f"  {c.name:<22} {c.help.splitlines()[0] if c.help else ''}")
    return "\n".join(lines)


def _find(commands: list[Command], argv: list[str]) -> tuple[Command, list[str]]:
    task = argv[0]
    by_task = [c for c in commands if c.task == task]
    if not by_task:
        close = difflib.get_close_matches(task, sorted({c.task for c in commands}), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise FastmedError(f"unknown task {task!r}{hint} (see fastmed --help)")
    if len(argv) > 1 and not argv[1].startswith("-") and "=" not in argv[1]:
        for c in by_task:
            if c.mode == argv[1]:
                return c, argv[2:]
        if any(c.mode for c in by_task):
            modes = [c.mode for c in by_task if c.mode]
            close = difflib.get_close_matches(argv[1], modes, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FastmedError(f"unknown mode {argv[1]!r} for {task}{hint}; modes: {', '.join(modes)}")
    for c in by_task:
        if c.mode is None:
            return c, argv[1:]
    modes = ", ".join(c.mode for c in by_task if c.mode)
    raise FastmedError(f"{task} needs a mode: {modes} (see fastmed {task} --help)")


def _resume_command(cmd: Command, cfg: object, run: str) -> str:
    """The command line that continues ``run``: ``cfg``'s non-default options, then ``--out RUN --resume``.

    The selector of a command with variants (``seg train --method``) is always written: each variant has
    its own default for it, so leaving it out would resume as the default variant.
    """
    parts = ["fastmed", cmd.name]
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name in ("out", "resume", "overwrite") or (value == default and f.name != cmd.selector):
            continue
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        parts += [f"--{f.name.replace('_', '-')}", shlex.quote(text)]
    return " ".join(parts + ["--out", shlex.quote(run), "--resume"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastmed`` console command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = all_commands()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_overview(commands))
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fastmed {__version__}")
        return 0
    try:
        if len(argv) >= 1 and any(a in ("-h", "--help") for a in argv):
            task_cmds = [c for c in commands if c.task == argv[0]]
            if len(argv) >= 2 and argv[1] not in ("-h", "--help"):
                cmd, rest = _find(commands, argv)
                print(format_help(cmd, rest))
            elif task_cmds:
                print("\n\n".join(format_help(c) for c in task_cmds))
            else:
                _find(commands, argv)  # raises the unknown-task error
            return 0
        cmd, rest = _find(commands, argv)
        cfg = cmd.parse(rest)
        result = cmd.load_runner()(cfg)
    except FastmedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        if not any(f.name == "resume" for f in dataclasses.fields(cfg)):  # e.g. `fastmed demo` running a trainer
            print(f"interrupted (run {exc.run})", file=sys.stderr)
        elif exc.resumable:
            print(f"interrupted; resume with: {_resume_command(cmd, cfg, exc.run)}", file=sys.stderr)
        else:
            print(f"interrupted before the first epoch of {exc.run} finished; nothing to resume (run the command again)",
                  file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if isinstance(result, int):
        return result
    return 0


if __name__ == "__main__":
    sys.exit(main())
