#!/usr/bin/env bash
# The packages as a user gets them:
#  1. builds the three .debs (scripts/package.sh) and checks their contents and lintian;
#  2. installs the build to a prefix other than the configured one (cmake --install --prefix)
#     and builds and runs a pkg-config and a find_package application against it, and the pasyn
#     CLI from it, with no LD_LIBRARY_PATH;
#  3. installs the .debs on this machine and builds both applications against /usr;
#  4. boots this machine's /usr under systemd in a container (scripts/systemd-test.sh) and runs
#     the units there: socket activation, writers and readers in group pasyn, stop, watchdog;
#  5. purges the packages (which leaves /var/lib/pasyn and the user pasyn).
# Needs root or sudo. It purges any pasyn package installed before it (step 5).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
work=$(mktemp -d)
chmod 0755 "$work"  # the applications run as other users, in the container too
installed=""
daemon=""

remove_packages() {
  installed=""
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o Dpkg::Use-Pty=0 \
    -o DPkg::Lock::Timeout=300 pasyn libpasyn-client-dev libpasyn-client0
}

cleanup() {
  local rc=$?
  if [[ -n $daemon ]]; then kill -TERM "$daemon" 2>/dev/null && wait "$daemon" || true; fi
  if ((rc)) && [[ -s $work/daemon.log ]]; then
    echo "== pasyn-writerd's log" >&2
    cat "$work/daemon.log" >&2
  fi
  if [[ -n $installed ]]; then remove_packages || true; fi
  rm -rf "$work"
  if ((rc)); then echo "package-test: FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT
trap "exit 130" INT  # so that Ctrl-C and kill run cleanup too
trap "exit 143" TERM

fail() {
  echo "package-test: $*" >&2
  exit 1
}

echo "== building the packages (scripts/package.sh)"
scripts/package.sh
deb_daemon=$(echo build-deb/pasyn_*.deb)
deb_runtime=$(echo build-deb/libpasyn-client0_*.deb)
deb_dev=$(echo build-deb/libpasyn-client-dev_*.deb)
for d in "$deb_daemon" "$deb_runtime" "$deb_dev"; do [[ -f $d ]] || fail "no $d"; done
version=$(dpkg-deb -f "$deb_daemon" Version)
project_version=${version%%+*}
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
libdir=usr/lib/$multiarch

echo "== package contents"
check_contents() {  # DEB FILE...: every FILE is in DEB
  local deb=$1 listing f
  shift
  dpkg-deb -f "$deb" Package Version Architecture Depends Recommends Section
  listing=$(dpkg -c "$deb" | awk '{print $6}')
  for f in "$@"; do
    grep -qxF "./$f" <<<"$listing" || fail "$f is not in $deb"
  done
}
check_contents "$deb_daemon" usr/bin/pasyn-writerd usr/bin/pasyn \
  usr/lib/systemd/system/pasyn-writerd@.service usr/lib/systemd/system/pasyn-writerd@.socket \
  usr/lib/sysusers.d/pasyn.conf usr/lib/tmpfiles.d/pasyn.conf usr/share/doc/pasyn/copyright
check_contents "$deb_runtime" "$libdir/libpasyn-client.so.$project_version" \
  "$libdir/libpasyn-client.so.${project_version%%.*}" usr/share/doc/libpasyn-client0/copyright
check_contents "$deb_dev" "$libdir/libpasyn-client.so" usr/include/pasyn/pasyn.hpp \
  usr/include/pasyn/version.hpp "$libdir/pkgconfig/pasyn-client.pc" \
  "$libdir/cmake/pasyn/pasynConfig.cmake" "$libdir/cmake/pasyn/pasynConfigVersion.cmake" \
  "$libdir/cmake/pasyn/pasynTargets.cmake" usr/share/doc/libpasyn-client-dev/copyright
dpkg-deb --ctrl-tarfile "$deb_runtime" | tar -xO ./shlibs | tee "$work/shlibs"
grep -qx "libpasyn-client ${project_version%%.*} libpasyn-client0 (>= $version)" "$work/shlibs" ||
  fail "the shlibs file of $deb_runtime is not 'libpasyn-client 0 libpasyn-client0 (>= $version)'"

echo "== lintian"
# Errors fail; warnings are listed. The suppressed tags are the deliberate choices of a
# package built by CPack from a source tree (no Debian source package exists).
lintian_rc=0
lintian --no-tag-display-limit --suppress-tags \
  no-manual-page,initial-upload-closes-no-bugs,no-changelog \
  "$deb_daemon" "$deb_runtime" "$deb_dev" | tee "$work/lintian.txt" || lintian_rc=$?
echo "lintian: $(grep -c '^E:' "$work/lintian.txt" || true) errors," \
  "$(grep -c '^W:' "$work/lintian.txt" || true) warnings"
((lintian_rc == 0)) || fail "lintian found errors"

echo "== relocated install: configured for /usr, installed to $work/relocated"
prefix=$work/relocated
cmake --install build-deb --prefix "$prefix" >/dev/null
grep '^prefix=' "$prefix/lib/$multiarch/pkgconfig/pasyn-client.pc"
grep '^ExecStart=' "$prefix/lib/systemd/system/pasyn-writerd@.service" | grep -qF "$prefix/bin/" ||
  fail "the installed unit does not name $prefix/bin/pasyn-writerd"
cp -r tests/packaging/consumer.cpp tests/packaging/consumer-cmake "$work/"
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH CPATH LIBRARY_PATH LD_LIBRARY_PATH

build_consumers() {  # DIR [PREFIX]: builds DIR/consumer-pkgconfig and DIR/consumer-cmake
  local dir=$1 prefix=${2:-} pc=() cm=()
  mkdir -p "$dir"
  if [[ -n $prefix ]]; then
    pc=(env PKG_CONFIG_PATH="$prefix/lib/$multiarch/pkgconfig")
    cm=(-DCMAKE_PREFIX_PATH="$prefix")
  fi
  local flags rpath=()
  flags=$("${pc[@]}" pkg-config --cflags --libs pasyn-client)
  echo "pkg-config --cflags --libs pasyn-client: $flags"
  # An application of a non-system prefix records where its library is, as usual.
  if [[ -n $prefix ]]; then
    rpath=("-Wl,-rpath,$("${pc[@]}" pkg-config --variable=libdir pasyn-client)")
  fi
  # shellcheck disable=SC2086  # pkg-config's output is meant to be split into arguments
  g++ -std=c++20 -Wall -Wextra -Werror -o "$dir/consumer-pkgconfig" \
    -DPASYN_CONSUMER='"consumer-pkgconfig"' -DPASYN_CONSUMER_TABLE='"consumer_pkgconfig"' \
    "$work/consumer.cpp" $flags "${rpath[@]}"
  cmake -S "$work/consumer-cmake" -B "$dir/cmake" -DCMAKE_BUILD_TYPE=Release "${cm[@]}" >/dev/null
  grep '^pasyn_DIR' "$dir/cmake/CMakeCache.txt"
  cmake --build "$dir/cmake" >/dev/null
  cp "$dir/cmake/consumer-cmake" "$dir/"
}

loads_from() {  # PROGRAM DIR: PROGRAM loads libpasyn-client.so.0 from DIR
  local lib
  lib=$(ldd "$1" | awk '$1 == "libpasyn-client.so.0" {print $3}')
  lib=$(realpath -e "$lib") || fail "$1 finds no libpasyn-client.so.0"
  echo "$(basename "$1") loads $lib"
  [[ $lib == "$(realpath -e "$2/libpasyn-client.so.0")" ]] ||
    fail "$1 loads '$lib', not the one in $2"
}

build_consumers "$work/relocated-apps" "$prefix"
for p in "$work/relocated-apps/consumer-pkgconfig" "$work/relocated-apps/consumer-cmake" \
  "$prefix/bin/pasyn"; do
  loads_from "$p" "$prefix/lib/$multiarch"
done
"$prefix/bin/pasyn-writerd" --database "$work/relocated.sqlite" --socket "$work/relocated.sock" \
  2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 200); do
  [[ -S $work/relocated.sock ]] && break
  kill -0 "$daemon" 2>/dev/null || fail "the relocated pasyn-writerd exited"
  sleep 0.05
done
"$work/relocated-apps/consumer-pkgconfig" "$work/relocated.sock" "$work/relocated.sqlite"
"$work/relocated-apps/consumer-cmake" "$work/relocated.sock" "$work/relocated.sqlite"
"$prefix/bin/pasyn" --socket "$work/relocated.sock" ping
kill -TERM "$daemon"
wait "$daemon" || fail "the relocated pasyn-writerd exited $? after SIGTERM"
daemon=""

echo "== installing the packages"
installed=yes
# No --reinstall: every commit has its own version, so a newer build is an upgrade.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
  -o DPkg::Lock::Timeout=300 "./$deb_daemon" "./$deb_runtime" "./$deb_dev"
for p in pasyn libpasyn-client0 libpasyn-client-dev; do
  [[ $(dpkg-query -W -f='${Version}' "$p") == "$version" ]] || fail "$p $version is not installed"
done
getent passwd pasyn
[[ -d /var/lib/pasyn && -d /run/pasyn && -d /etc/pasyn ]] ||
  fail "/var/lib/pasyn, /run/pasyn or /etc/pasyn is missing"
stat -c '%n %U:%G %a' /var/lib/pasyn /run/pasyn /etc/pasyn

echo "== building two applications against the installed packages"
build_consumers "$work/apps"
for c in "$work/apps/consumer-pkgconfig" "$work/apps/consumer-cmake" /usr/bin/pasyn; do
  loads_from "$c" "/usr/lib/$multiarch"
done

echo "== the units under systemd (scripts/systemd-test.sh)"
scripts/systemd-test.sh "$work/apps"

echo "== purging the packages"
remove_packages
for f in /usr/bin/pasyn-writerd "/usr/lib/$multiarch/libpasyn-client.so.0" \
  /usr/lib/systemd/system/pasyn-writerd@.service; do
  [[ ! -e $f ]] || fail "$f is still there after removal"
done
echo "package-test: ok"
