#!/usr/bin/env bash
# ABI check of libpasyn-client.so.0 against the committed baseline packaging/abi/libpasyn-client.abi.gz
# (abidw's XML, gzipped: ~9 MB of standard-library types otherwise; abidiff from Debian's
# abigail-tools), so that an accidental ABI break fails CI.
#
#   scripts/abi-check.sh [LIBRARY]           compare (default: build-deb's library; LIBRARY
#                                            needs DWARF: PASYN_LIBRARY_DEBUG_INFO=ON)
#   scripts/abi-check.sh --update [LIBRARY]  write the baseline from LIBRARY, to commit
#
# A deliberate break bumps SOVERSION in libclient/CMakeLists.txt (and with it the runtime
# package's name, libpasyn-clientN) and takes a new baseline in the same commit. Without a
# baseline the check is skipped, loudly: take it once the public API has settled.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=packaging/abi/libpasyn-client.abi.gz
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
  # The packages' build tree (scripts/package.sh, run by scripts/package-test.sh before this):
  # its library's own sources carry -g (PASYN_LIBRARY_DEBUG_INFO), which abidw needs.
  lib=$(echo build-deb/libclient/libpasyn-client.so.*.*.*)
  [[ -f $lib ]] || scripts/package.sh
  lib=$(echo build-deb/libclient/libpasyn-client.so.*.*.*)
fi
[[ -f $lib ]] || { echo "abi-check: no library at $lib" >&2; exit 2; }
if ! readelf -S "$lib" | grep -q '\.debug_info'; then
  echo "abi-check: $lib has no DWARF (configure with -DPASYN_LIBRARY_DEBUG_INFO=ON)" >&2
  exit 2
fi

if [[ -n $update ]]; then
  mkdir -p "$(dirname "$baseline")"
  abidw --headers-dir "$headers" --headers-dir "$(dirname "$lib")/include/pasyn" \
    --header-file proto/include/pasyn/value.hpp \
    --drop-private-types --no-show-locs --no-corpus-path --out-file "${baseline%.gz}" "$lib"
  gzip -9nf "${baseline%.gz}"
  echo "abi-check: wrote $baseline from $lib: commit it"
  exit 0
fi

rc=0
expected=$(mktemp --suffix=.abi)
report=$(mktemp)
trap 'rm -f "$expected" "$report"' EXIT
gzip -dc "$baseline" >"$expected"
# No --headers-dir2 here: the baseline carries no source locations (they change with every
# edit), and without them abidiff's header filter would call every type private and hide its
# changes. The library exports only the public API anyway (pasyn-client.map).
# packaging/abi/suppressions.ini hides libstdc++'s internal types only (see there).
abidiff --suppressions packaging/abi/suppressions.ini "$expected" "$lib" >"$report" || rc=$?
cat "$report"
# abidiff's status is a bit field: 4 = ABI change, 8 = incompatible change (a symbol removed).
# A changed layout (a member inserted in ClientOptions, say) is only "4", so anything removed or
# changed fails too; only additions pass.
if ((rc & 8)) || grep -Eq '[1-9][0-9]* (Removed|Changed)' "$report"; then
  echo "abi-check: FAILED: incompatible ABI change against $baseline (bump SOVERSION)" >&2
  exit 1
elif ((rc & 4)); then
  echo "abi-check: compatible ABI change (additions): update the baseline with --update"
elif ((rc)); then
  echo "abi-check: abidiff failed (exit $rc)" >&2
  exit 2
else
  echo "abi-check: ok, the ABI is the baseline's"
fi
