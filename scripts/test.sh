#!/usr/bin/env bash
# Builds pasyn and runs every test (unit, in-process, and against the real pasyn-writerd binary),
# then the package test (builds the .deb, installs it, uses it, removes it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh
ctest --test-dir build --output-on-failure -j2 --timeout 300
scripts/package-test.sh
scripts/python-test.sh
