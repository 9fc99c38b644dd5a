#!/usr/bin/env bash
# Installs the Debian packages pasyn builds and tests with, if any is missing (needs root or sudo).
set -euo pipefail

packages=(
  cmake g++ make pkg-config
  libsqlite3-dev   # SQLite3
  libboost-dev     # Boost.Asio (header-only)
  libspdlog-dev    # logging
  libcli11-dev     # flags and config files
  libsystemd-dev   # sd_notify, socket activation
  libgtest-dev     # tests
  sqlite3          # the sqlite3 shell, used by the demo to show the database
  dpkg-dev file    # cpack -G DEB: dpkg-shlibdeps computes the package's Depends
  systemd          # systemd-socket-activate, systemd-analyze: service tests
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
echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
