"""Typed configs and the command table.

Each module here (``polyp.py``, ``wsi.py``, ...) defines dataclass configs with
``opt(...)`` fields and a ``COMMANDS`` list of ``Command`` entries. These
modules import only the standard library so that ``fastmed --help`` is fast;
the code that runs a command is named by a ``"module:function"`` string and
imported only when the command runs.
"""
from fastmed.cfg.base import Command, all_commands, opt, parse_options

__all__ = ["Command", "all_commands", "opt", "parse_options"]
