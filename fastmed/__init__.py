"""fastmed: train medical-imaging recognizers fast and ship them to the edge.

Importing ``fastmed`` is cheap (no torch): the CLI answers ``--help`` quickly.
Tasks live in ``fastmed.polyp``, ``fastmed.wsi``, ``fastmed.seg``,
``fastmed.distill``; kernels in ``fastmed.kernels``; deployment in
``fastmed.export``.
"""
from fastmed._version import __version__
from fastmed.errors import FastmedError

__all__ = ["__version__", "FastmedError"]
