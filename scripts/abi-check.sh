#!/usr/bin/env bash
# ABI check of libpasyn-client.so.0 against the committed baseline packaging/abi/libpasyn-client.abi
# (abidiff from Debian's abigail-tools), so that an accidental ABI break fails CI.
#
#   scripts/abi-check.sh [LIBRARY]           compare (default: build-deb's library, with its
#                                            debug info from a RelWithDebInfo build of its own)
#   scripts/abi-check.sh --update [LIBRARY]  write the baseline from LIBRARY, to commit
#
# A deliberate break bumps SOVERSION in libclient/CMakeLists.txt (and with it the runtime
# package's name, libpasyn-clientN) and takes a new baseline in the same commit. Without a
# baseline the check is skipped, loudly: take it once the public API has settled.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=packaging/abi/libpasyn-client.abi
headers=libclient/include/pasyn

update=""
if [[ ${1:-} == --update ]]; then update=yes; shift; fi
lib=${1:-}
if [[ -z $update && ! -f $baseline ]]; then
  cat >&2 <<MSG
########################################################################################
abi-check: SKIPPED: no ABI baseline ($baseline) is committed yet.
           Nothing protects libpasyn-client.so.0's ABI until one is: take it with
           scripts/abi-check.sh --update, and commit $baseline.
########################################################################################
MSG
  exit 0
fi

if [[ -z $lib ]]; then
  # abidw needs DWARF: a build of the library alone, with debug info, in build-abi/.
  scripts/install-deps.sh
  source scripts/ccache-env.sh
  cmake -S . -B build-abi -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
    -DPASYN_BUILD_TESTS=OFF -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build build-abi -j2 --target pasyn_client
  lib=$(echo build-abi/libclient/libpasyn-client.so.*.*.*)
fi
[[ -f $lib ]] || { echo "abi-check: no library at $lib" >&2; exit 2; }

if [[ -n $update ]]; then
  mkdir -p "$(dirname "$baseline")"
  abidw --headers-dir "$headers" --headers-dir "$(dirname "$lib")/include/pasyn" \
    --no-corpus-path --out-file "$baseline" "$lib"
  echo "abi-check: wrote $baseline from $lib: commit it"
  exit 0
fi

rc=0
abidiff --headers-dir2 "$headers" --headers-dir2 "$(dirname "$lib")/include/pasyn" \
  "$baseline" "$lib" || rc=$?
# abidiff's status is a bit field: 4 = ABI change, 8 = incompatible ABI change.
if ((rc & 8)); then
  echo "abi-check: FAILED: incompatible ABI change against $baseline (bump SOVERSION)" >&2
  exit 1
elif ((rc & 4)); then
  echo "abi-check: compatible ABI change (additions): update the baseline with --update"
elif ((rc)); then
  echo "abi-check: abidiff failed (exit $rc)" >&2
  exit 1
else
  echo "abi-check: ok, the ABI is the baseline's"
fi
