"""Map the top-level ``kernels/`` and ``export/`` folders into the ``fastmed`` package.

They install as ``fastmed.kernels`` and ``fastmed.export`` (no top-level
``kernels`` or ``export`` import name). Everything else is in pyproject.toml.
"""
from setuptools import find_packages, setup

MAPPED = {"kernels": "fastmed.kernels", "export": "fastmed.export"}

packages = find_packages(include=["fastmed", "fastmed.*"])
for folder, name in MAPPED.items():
    packages += [name + sub[len(folder):] for sub in find_packages(include=[folder, f"{folder}.*"])]

setup(packages=packages, package_dir={name: folder for folder, name in MAPPED.items()})
