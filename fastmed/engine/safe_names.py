"""Names read from files (slide ids, class names) that become one component of an output path.

Every such name goes through ``safe_component`` before it is joined to an
output folder, so that no file can make a command write outside ``--out``.
"""
from __future__ import annotations

import re

from fastmed.errors import DataError

_DRIVE = re.compile(r"^[A-Za-z]:")  # "C:x" is a drive-relative path on Windows


def safe_component(name: str, what: str) -> str:
    """``name`` unchanged when it is a plain file name, else ``DataError`` naming ``what`` and why.

    Refused: empty names, ``.`` and ``..``, path separators (``/`` and ``\\``),
    absolute or drive names (``/x``, ``C:x``) and NUL or other control characters.
    """
    if not isinstance(name, str):
        reason = f"it is a {type(name).__name__}, not text"
    elif not name:
        reason = "it is empty"
    elif name in (".", ".."):
        reason = "it is a relative folder reference"
    elif "/" in name or "\\" in name:
        reason = "it holds a path separator"
    elif _DRIVE.match(name):
        reason = "it names a drive"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        reason = "it holds a control character"
    else:
        return name
    raise DataError(f"{what} {name!r} cannot be used as a file name: {reason}")
