#!/usr/bin/env bash
# Builds the Debian packages (Release, files under /usr) into build-deb/ (the library's own
# sources with -g, which CPack strips from the packages, for scripts/abi-check.sh):
#   pasyn_<v>_<arch>.deb                daemon, pasyn CLI, systemd units, sysusers, tmpfiles
#   libpasyn-client0_<v>_<arch>.deb     the runtime library
#   libpasyn-client-dev_<v>_<arch>.deb  headers, .so link, pkg-config file, CMake package
# <v> is the project version plus the commit count and hash (0.1.0+git42.abcdef0123).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/ccache-env.sh
# /usr: GNUInstallDirs then picks Debian's multiarch libdir (lib/x86_64-linux-gnu).
cmake -S . -B build-deb -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr \
  -DPASYN_WERROR="${WERROR:-ON}" -DPASYN_LIBRARY_DEBUG_INFO=ON \
  -DPASYN_BUILD_TESTS=OFF -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build-deb -j2
rm -f build-deb/*.deb
(cd build-deb && cpack -G DEB)
