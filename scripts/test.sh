#!/usr/bin/env bash
# Builds pasyn (Release, warnings as errors) and Litestream (scripts/litestream.sh) and runs every
# test (unit, in-process, against the real pasyn-writerd binary and beside Litestream; the heavy
# ones alone), then the package test (builds the .debs, installs them, runs the units under
# systemd in a container, removes them), the ABI check, and the Python package (pip install
# ./python in a fresh venv, then its pytest suite). First, that every C/C++ source is formatted
# (scripts/format-check.sh, seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/format-check.sh
scripts/build.sh
# Litestream, for the Litestream test (README "Surviving the loss of the machine"): built from
# the Go module proxy into build/litestream-bin (a minute the first time, cached after); a
# failure here fails the run, as the test would.
scripts/litestream.sh build/litestream-bin >/dev/null
ctest --test-dir build --output-on-failure -j2 --timeout 300
scripts/package-test.sh
scripts/abi-check.sh
scripts/python-test.sh
