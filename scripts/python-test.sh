#!/usr/bin/env bash
# Builds the Python distribution with pip in a fresh venv under build/ (pip install ./python:
# scikit-build-core and nanobind come from PyPI) and runs its pytest suite against it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=build/python-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet pytest
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" "$venv/bin/pip" install ./python
# From outside the checkout's python/ directory, so the installed package is the one tested.
cd build
"python-venv/bin/python" -m pytest -q ../python/tests
