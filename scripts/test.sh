#!/usr/bin/env bash
# Builds pasyn (Release, warnings as errors) and runs every test (unit, in-process, and against
# the real pasyn-writerd binary; the heavy ones alone), then the package test (builds the .debs,
# installs them, runs the units under systemd in a container, removes them) and the ABI check.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure -j2 --timeout 300
scripts/package-test.sh
scripts/abi-check.sh
