#!/usr/bin/env bash
# Proves that `pip wheel ./python` makes a wheel that installs and runs on another Debian 12
# machine where only libsqlite3-0 (besides Python) is present:
#   1. builds the wheel in a fresh venv (pip wheel ./python, build isolation: scikit-build-core
#      and nanobind come from PyPI);
#   2. makes a fresh minimal Debian 12 root (mmdebstrap --variant=minbase) with python3,
#      python3-venv and libsqlite3-0 only, from the Debian mirror this machine's apt uses
#      (PASYN_DEBIAN_MIRROR overrides it); the .debs are kept in build/wheel-test/debs
#      (PASYN_DEB_CACHE overrides it), so later runs download nothing;
#   3. checks that no libspdlog, libfmt, libboost or pasyn package is in that root;
#   4. in a chroot: makes a venv, installs the wheel from the file (--no-index: no network),
#      runs scripts/wheel-smoke.py (writer server, MultiplexedClient writes, connect() reads),
#      and runs ldd on the extension, which must resolve every library and name no
#      libspdlog/libfmt/libboost/libpasyn.
# Needs root (mmdebstrap, chroot, mount) and mmdebstrap (apt-get install mmdebstrap).
# Prints the time of each step and of the whole run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
work=$repo/build/wheel-test
start=$SECONDS
step() { echo "wheel-test: [$((SECONDS - start)) s] $*"; }
if ((EUID != 0)); then
  echo "wheel-test: needs root (mmdebstrap and chroot)" >&2
  exit 2
fi
if ! command -v mmdebstrap >/dev/null; then
  echo "wheel-test: mmdebstrap is missing: apt-get install mmdebstrap" >&2
  exit 2
fi
mirror=${PASYN_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  # The first Debian (not debian-security) mirror in this machine's apt sources, deb822 or
  # one-line form.
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?( |$)' | head -n1 | tr -d ' ' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

root=$work/root
debs=${PASYN_DEB_CACHE:-$work/debs}
mkdir -p "$debs"
cleanup() {
  # Whatever is mounted under the root (our /proc, or what a failed mmdebstrap left), deepest
  # first, before anything is removed.
  if [[ -d $root ]]; then
    { findmnt -rn -o TARGET | grep -F "$root/" || true; } | sort -r |
      while read -r m; do umount -l "$m"; done
  fi
}
trap cleanup EXIT
cleanup
rm -rf --one-file-system "$work/venv" "$work/dist" "$root"

source scripts/ccache-env.sh
step "building the wheel: pip wheel ./python in a fresh venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --upgrade pip
# A build directory of its own (python/build/wheel-*): the ccache launcher changes every compile
# command, so sharing scripts/python-test.sh's would make each of them rebuild it all.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$work/venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/dist" \
  -C build-dir="build/wheel-{wheel_tag}" ./python
wheels=("$work"/dist/pasyn_sqlite-*.whl)
if ((${#wheels[@]} != 1)); then
  echo "wheel-test: expected one wheel, found: ${wheels[*]}" >&2
  exit 1
fi
wheel=${wheels[0]}
step "built ${wheel##*/} ($(du -h "$wheel" | cut -f1))"

step "making a minimal Debian 12 root from $mirror (python3, python3-venv, libsqlite3-0)"
# mmdebstrap, not debootstrap: with dpkg's unsafe I/O it takes 1.5 min with a warm cache where
# debootstrap took 5 min (both measured here, at load 9). The .debs go in and out of $debs.
into_root="mkdir -p \"\$1/var/cache/apt/archives\" &&
  find '$debs' -name '*.deb' -exec cp -t \"\$1/var/cache/apt/archives\" {} +"
mmdebstrap --mode=root --variant=minbase --include=python3,python3-venv,libsqlite3-0 \
  --dpkgopt=force-unsafe-io \
  --setup-hook="$into_root" \
  --customize-hook="sync-out /var/cache/apt/archives '$debs'" \
  bookworm "$root" "$mirror" >"$work/mmdebstrap.log" 2>&1 || {
  tail -n 30 "$work/mmdebstrap.log" >&2
  echo "wheel-test: mmdebstrap failed (log: $work/mmdebstrap.log)" >&2
  exit 1
}
step "root made: $(chroot "$root" dpkg-query -W | wc -l) packages"
forbidden='libspdlog|libfmt|libboost|pasyn|libcli11|libsqlite3-dev'
packages=$(chroot "$root" dpkg-query -W -f '${Package}\n')
if grep -E "^($forbidden)" <<<"$packages"; then
  echo "wheel-test: the root has packages the wheel must not need (above)" >&2
  exit 1
fi
if ! grep -qx libsqlite3-0 <<<"$packages"; then
  echo "wheel-test: libsqlite3-0 is not in the root" >&2
  exit 1
fi

mount -t proc proc "$root/proc"
cp "$wheel" "$root/tmp/"
cp scripts/wheel-smoke.py "$root/tmp/wheel-smoke.py"
step "installing the wheel in a venv inside the root (no network: --no-index)"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  /bin/sh -ec "python3 -m venv /opt/venv &&
    /opt/venv/bin/pip install --quiet --no-index /tmp/${wheel##*/}"
ext=$(chroot "$root" /opt/venv/bin/python -c \
  'import pasyn_sqlite_core._core as m; print(m.__file__)')
step "ldd $ext"
deps=$(chroot "$root" ldd "$ext")
echo "$deps"
if grep -E 'not found|spdlog|libfmt|boost|pasyn' <<<"$deps"; then
  echo "wheel-test: the extension needs a library that only a build machine has (above)" >&2
  exit 1
fi
grep -q 'libsqlite3\.so\.0 => /' <<<"$deps" || {
  echo "wheel-test: the extension does not link the system libsqlite3" >&2
  exit 1
}
step "running the smoke test inside the root"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp \
  /opt/venv/bin/python /tmp/wheel-smoke.py
step "ok (total $((SECONDS - start)) s)"
