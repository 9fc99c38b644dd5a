#!/usr/bin/env bash
# Configures and builds pasyn into build/ (two jobs: these machines have two cores): a Release
# build with the tests, warnings as errors (PASYN_WERROR=ON), as CI builds it. BUILD_TYPE and
# WERROR override the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/ccache-env.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" -DPASYN_WERROR="${WERROR:-ON}" \
  -DPASYN_LIBRARY_DEBUG_INFO=ON >/dev/null
cmake --build build -j2
