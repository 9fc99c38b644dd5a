#!/usr/bin/env bash
# Builds the Debian package build-deb/pasyn_<version>_<arch>.deb (Release, files under /usr).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# /usr: the prefix the package installs to is also the one written into the .pc file and the
# units, and it makes GNUInstallDirs pick Debian's multiarch libdir (lib/x86_64-linux-gnu).
cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DPASYN_BUILD_TESTS=OFF -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-deb -j2
rm -f build-deb/pasyn_*.deb
(cd build-deb && cpack -G DEB)
