#!/usr/bin/env bash
# Builds the .deb, installs it, builds two applications against the installed files only
# (pkg-config and CMake), runs them against the installed pasyn-writerd, then purges the package
# (which leaves /var/lib/pasyn and the user pasyn).
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
instance=ci-pkg
db=/var/lib/pasyn/$instance.sqlite
sock=/run/pasyn/$instance.sock
unitdir=/lib/systemd/system
work=$(mktemp -d)
chmod 0755 "$work"  # the consumers run as another user
daemon=""
installed=""

remove_package() {
  installed=""
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq -o Dpkg::Use-Pty=0 pasyn
}

running() {  # true while process $1 exists and has not exited (a zombie has)
  local state
  state=$(ps -p "$1" -o stat=) && [[ $state != Z* ]]
}

stop_daemon() {  # SIGTERM, then SIGKILL if it has not exited within 40 s; returns its status
  local pid=$daemon rc=0
  daemon=""
  "${sudo[@]}" kill -TERM "$pid"
  for _ in $(seq 400); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then "${sudo[@]}" kill -KILL "$pid"; fi
  wait "$pid" || rc=$?
  return $rc
}

cleanup() {
  local rc=$?
  if [[ -n $daemon ]]; then stop_daemon || true; fi
  if ((rc)) && [[ -s $work/daemon.log ]]; then
    echo "== pasyn-writerd's log" >&2
    cat "$work/daemon.log" >&2
  fi
  if [[ -n $installed ]]; then remove_package || true; fi
  "${sudo[@]}" rm -f "$db" "$db-wal" "$db-shm" "$db-pasyn.lock" "/etc/pasyn/$instance.conf"
  rm -rf "$work"
  if ((rc)); then echo "package-test: FAILED (exit $rc)" >&2; fi
}
trap cleanup EXIT
trap "exit 130" INT  # so that Ctrl-C and kill run cleanup too
trap "exit 143" TERM

echo "== building the package (scripts/package.sh)"
scripts/package.sh
debs=(build-deb/pasyn_*.deb)
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

echo "== dpkg -c $deb"
dpkg -c "$deb"
dpkg-deb -f "$deb" Package Version Architecture Depends Recommends Section
listing=$(dpkg -c "$deb" | awk '{print $6}')
expected=(
  ./usr/bin/pasyn-writerd
  "./usr/lib/$multiarch/libpasyn-client.so.$version"
  "./usr/lib/$multiarch/libpasyn-client.so.${version%%.*}"
  "./usr/lib/$multiarch/libpasyn-client.so"
  ./usr/include/pasyn/pasyn.hpp
  ./usr/include/pasyn/version.hpp
  "./usr/lib/$multiarch/pkgconfig/pasyn-client.pc"
  "./usr/lib/$multiarch/cmake/pasyn/pasynConfig.cmake"
  "./usr/lib/$multiarch/cmake/pasyn/pasynConfigVersion.cmake"
  "./usr/lib/$multiarch/cmake/pasyn/pasynTargets.cmake"
  ./usr/lib/systemd/system/pasyn-writerd@.service
  ./usr/lib/systemd/system/pasyn-writerd@.socket
  ./usr/lib/sysusers.d/pasyn.conf
  ./usr/lib/tmpfiles.d/pasyn.conf
)
if [[ -e build-deb/cli/pasyn ]]; then expected+=(./usr/bin/pasyn); fi
for f in "${expected[@]}"; do
  grep -qxF "$f" <<<"$listing" || { echo "package-test: $f is not in $deb" >&2; exit 1; }
done
echo "package-test: the package has all ${#expected[@]} expected files"

echo "== installing $deb"
installed=yes
# --reinstall: a package of the same version left by an earlier run is replaced all the same.
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 --reinstall "./$deb"
getent passwd pasyn
[[ -d /var/lib/pasyn && -d /run/pasyn && -d /etc/pasyn ]] ||
  { echo "package-test: /var/lib/pasyn, /run/pasyn or /etc/pasyn is missing" >&2; exit 1; }
stat -c '%n %U:%G %a' /var/lib/pasyn /run/pasyn /etc/pasyn

echo "== systemd-analyze verify (installed units)"
if ! command -v systemd-analyze >/dev/null; then
  echo "package-test: systemd-analyze is not installed; units not verified"
else
  # A trivial unit first: if even that fails, this machine cannot verify units at all.
  printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
  if ! probe=$(systemd-analyze --man=no verify "$work/probe.service" 2>&1); then
    echo "package-test: systemd-analyze verify cannot run here; units not verified: $probe"
  else
    systemd-analyze --man=no verify "$unitdir/pasyn-writerd@$instance.socket" \
      "$unitdir/pasyn-writerd@$instance.service"
    echo "package-test: units verified"
  fi
fi

echo "== building two applications against the installed files"
cp -r tests/packaging/consumer.cpp tests/packaging/consumer-cmake "$work/"
unset PKG_CONFIG_PATH CMAKE_PREFIX_PATH CPATH LIBRARY_PATH LD_LIBRARY_PATH
echo "pkg-config --cflags --libs pasyn-client: $(pkg-config --cflags --libs pasyn-client)"
mkdir -p "$work/consumer-pkgconfig"
# shellcheck disable=SC2046  # pkg-config's output is meant to be split into arguments
g++ -std=c++20 -Wall -Wextra -Werror -o "$work/consumer-pkgconfig/consumer-pkgconfig" \
  -DPASYN_CONSUMER='"consumer-pkgconfig"' -DPASYN_CONSUMER_TABLE='"consumer_pkgconfig"' \
  "$work/consumer.cpp" $(pkg-config --cflags --libs pasyn-client)
cmake -S "$work/consumer-cmake" -B "$work/consumer-cmake/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
grep '^pasyn_DIR' "$work/consumer-cmake/build/CMakeCache.txt"
cmake --build "$work/consumer-cmake/build"
consumers=("$work/consumer-pkgconfig/consumer-pkgconfig" "$work/consumer-cmake/build/consumer-cmake")
for c in "${consumers[@]}"; do
  lib=$(ldd "$c" | awk '$1 == "libpasyn-client.so.0" {print $3}')
  echo "$(basename "$c") loads $lib"
  [[ $lib == "/usr/lib/$multiarch/libpasyn-client.so.0" || $lib == "/lib/$multiarch/libpasyn-client.so.0" ]] ||
    { echo "package-test: $c does not load the installed library" >&2; exit 1; }
done

echo "== starting the installed pasyn-writerd as user pasyn"
"${sudo[@]}" rm -f "$db" "$db-wal" "$db-shm" "$db-pasyn.lock"
help=$(/usr/bin/pasyn-writerd --help)
if [[ $help == *--instance* ]]; then
  args=(--instance "$instance")
  # The instance's flags file, as an operator writes it.
  echo 'synchronous = "normal"' | "${sudo[@]}" tee "/etc/pasyn/$instance.conf" >/dev/null
else
  args=(--database "$db" --socket "$sock")
fi
echo "pasyn-writerd ${args[*]}"
# setpriv, not runuser: runuser stays the parent and answers SIGTERM by killing the daemon
# after 2 s and exiting 143. UMask 0007 as in the unit: group pasyn may read the database.
"${sudo[@]}" bash -c 'umask 0007 && exec setpriv --reuid=pasyn --regid=pasyn --init-groups -- "$@"' \
  pasyn-writerd /usr/bin/pasyn-writerd "${args[@]}" 2>"$work/daemon.log" &
daemon=$!
for _ in $(seq 200); do
  "${sudo[@]}" test -S "$sock" && break
  running "$daemon" || { echo "package-test: pasyn-writerd exited" >&2; exit 1; }
  sleep 0.05
done
"${sudo[@]}" test -S "$sock" || { echo "package-test: no socket at $sock" >&2; exit 1; }
grep -m1 serving "$work/daemon.log" || true

echo "== the applications write and read as user nobody in group pasyn"
for c in "${consumers[@]}"; do
  "${sudo[@]}" setpriv --reuid=nobody --regid=nogroup --groups=pasyn -- "$c" "$sock" "$db"
done

if [[ -x /usr/bin/pasyn ]]; then
  echo "== /usr/bin/pasyn --socket $sock ping"
  "${sudo[@]}" /usr/bin/pasyn --socket "$sock" ping
fi

echo "== stopping pasyn-writerd (SIGTERM)"
rc=0
stop_daemon || rc=$?
[[ $rc -eq 0 ]] || { echo "package-test: pasyn-writerd exited $rc after SIGTERM" >&2; exit 1; }
echo "pasyn-writerd exited 0"

echo "== purging the package"
remove_package
for f in /usr/bin/pasyn-writerd "/usr/lib/$multiarch/libpasyn-client.so.0" \
  /usr/lib/systemd/system/pasyn-writerd@.service; do
  [[ ! -e $f ]] || { echo "package-test: $f is still there after removal" >&2; exit 1; }
done
echo "package-test: ok"
