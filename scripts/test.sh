#!/usr/bin/env bash
# Builds pasyn (Release, warnings as errors) and Litestream (scripts/litestream.sh) and runs every
# test (unit, in-process, against the real pasyn-writerd binary and beside Litestream; the heavy
# ones alone), then the package test (builds the .debs, installs them, runs the units under
# systemd in a container, removes them), the ABI check, and the Python package (pip install
# ./python in a fresh venv, then its pytest suite). First, that every C/C++ source is formatted
# (scripts/format-check.sh, seconds). Each step prints its time, so that a CI log shows where
# CI's 25 minutes go.
set -euo pipefail
cd "$(dirname "$0")/.."
step() {
  local start=$SECONDS
  "$@"
  echo "== scripts/test.sh: $1 took $((SECONDS - start)) s" >&2
}
step scripts/format-check.sh
step scripts/build.sh
# Litestream, for the Litestream test (README "Surviving the loss of the machine"): built from
# the Go module proxy into build/litestream-bin (a minute the first time, cached after); a
# failure here fails the run, as the test would.
step scripts/litestream.sh build/litestream-bin >/dev/null
step ctest --test-dir build --output-on-failure -j2 --timeout 300
step scripts/package-test.sh
step scripts/abi-check.sh
step scripts/python-test.sh
