#!/usr/bin/env bash
# Runs the whole ctest suite under AddressSanitizer + UBSan (build-asan/) and under
# ThreadSanitizer (build-tsan/) through scripts/sanitize.sh, timing each; fails if either fails
# or any sanitizer reports anything. Both always run, so one CI run shows both verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
summary=()
for kind in asan tsan; do
  echo "== scripts/sanitize.sh $kind"
  start=$SECONDS
  rc=0
  # Both with g++. (clang++ for the ASan tree does not link yet: libpasyn-client.so is linked
  # with --no-undefined, and clang keeps the sanitizer runtime in the executables. clang compiles
  # the fuzz targets, scripts/fuzz.sh.)
  cxx=g++ cc=gcc
  CXX=$cxx CC=$cc scripts/sanitize.sh "$kind" || rc=$?
  summary+=("$kind: $( ((rc)) && echo "FAILED (exit $rc)" || echo ok) in $((SECONDS - start)) s")
  if ((rc)); then failed+=("$kind"); fi
done
printf 'ci-sanitizers: %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "ci-sanitizers: FAILED: ${failed[*]}" >&2
  exit 1
fi
