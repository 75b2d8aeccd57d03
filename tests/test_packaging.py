"""The install maps kernels/ and export/ into fastmed and exposes no top-level names."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_subpackages():
    import fastmed.export
    import fastmed.kernels

    assert Path(fastmed.kernels.__file__).resolve() == ROOT / "kernels" / "__init__.py"
    assert Path(fastmed.export.__file__).resolve() == ROOT / "export" / "__init__.py"


def test_no_top_level_kernels_or_export_outside_the_repo(tmp_path):
    code = "import importlib.util as u; print(u.find_spec('kernels'), u.find_spec('export'), u.find_spec('fastmed.kernels') is not None)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert out == ["None", "None", "True"]


def test_kernels_import_lazily_without_triton_or_numba():
    code = "import sys, fastmed.kernels; print('triton' in sys.modules, 'numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


@pytest.mark.skipif(importlib.util.find_spec("build") is None, reason="needs the 'build' package (dev extra)")
def test_built_wheel_layout_and_import(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)],
                   check=True, capture_output=True, text=True)
    wheel = next(dist.glob("fastmed-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "fastmed/kernels/__init__.py" in names and "fastmed/export/__init__.py" in names
    assert not any(n.startswith(("kernels/", "export/")) for n in names)
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    # the wheel's copy goes first on sys.path, ahead of the editable install's finder
    code = f"import sys; sys.path.insert(0, {str(target)!r}); import fastmed.kernels, fastmed.export; print(fastmed.kernels.__file__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(target / "fastmed" / "kernels" / "__init__.py")
