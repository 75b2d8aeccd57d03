"""``safe_component``: names read from files never become paths outside the output folder."""
from __future__ import annotations

import pytest

from fastmed.engine.safe_names import safe_component
from fastmed.errors import DataError


@pytest.mark.parametrize("name", ["slide_000", "Schnitt_ü_玻片", "a.b", "...", "x..y", "tumor (grade 2)"])
def test_plain_names_pass_unchanged(name):
    assert safe_component(name, "slide id") == name


@pytest.mark.parametrize("name, why", [
    ("", "empty"), (".", "relative folder"), ("..", "relative folder"),
    ("../../x", "separator"), ("/tmp/x", "separator"), ("a/b", "separator"), ("..\\x", "separator"),
    ("C:evil", "drive"), ("a\x00b", "control"), ("a\nb", "control"), (3, "int, not text"),
])
def test_path_like_names_are_refused_in_one_line(name, why):
    with pytest.raises(DataError, match=why) as exc:
        safe_component(name, "class name")
    assert str(exc.value).startswith(f"class name {name!r} cannot be used as a file name")
