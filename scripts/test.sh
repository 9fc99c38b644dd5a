#!/usr/bin/env bash
# Builds pasyn (Release, warnings as errors) and runs every test (unit, in-process, and against
# the real pasyn-writerd binary; the heavy ones alone), then the package test (builds the .debs,
# installs them, runs the units under systemd in a container, removes them), the ABI check, and
# the Python package (pip install ./python in a fresh venv, then its pytest suite). First, that
# every C/C++ source is formatted (scripts/format-check.sh, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/format-check.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j2 --timeout 300
scripts/package-test.sh
scripts/abi-check.sh
scripts/python-test.sh
