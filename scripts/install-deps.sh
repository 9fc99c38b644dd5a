#!/usr/bin/env bash
# Installs the Debian 12 packages pasyn builds, tests and packages with, if any is missing (needs
# root or sudo). Enough for a minimal image (debian:12, a fresh cloud VM). Waits up to 5 minutes
# for the dpkg lock (unattended-upgrades holds it for a while after boot).
set -euo pipefail

packages=(
  cmake g++ make pkg-config git
  ccache           # compiler cache shared by CI's build trees
  libsqlite3-dev   # SQLite3
  libboost-dev     # Boost.Asio (header-only)
  libspdlog-dev    # logging
  libcli11-dev     # flags and config files
  libsystemd-dev   # sd_notify, socket activation
  libgtest-dev     # tests
  sqlite3          # the sqlite3 shell, used by the demo to show the database
  dpkg-dev file    # cpack -G DEB: dpkg-shlibdeps computes the package's Depends
  systemd          # systemd-socket-activate, systemd-analyze: service tests
  systemd-container  # systemd-nspawn: package-test runs the units under systemd as PID 1
  procps           # ps, used by the package test
  util-linux       # setpriv, nsenter
  clang libclang-rt-14-dev  # the clang build (ASan leg) of the whole tree, and the fuzz targets
  llvm-14          # llvm-symbolizer: file and line in the clang ASan tree's reports
  lintian          # checks the .debs
  abigail-tools    # abidiff: scripts/abi-check.sh
  clang-format     # scripts/format-check.sh
  gdb              # the stacks of a process a test kills for hanging (daemon_fixture.cpp)
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
apt=(apt-get -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" "${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" "${apt[@]}" install -y -qq --no-install-recommends \
  "${missing[@]}"
