#!/usr/bin/env bash
# Runs the whole ctest suite under AddressSanitizer + UBSan (build-asan/, clang) and under
# ThreadSanitizer (build-tsan/, g++) through scripts/sanitize.sh, timing each; fails if either fails
# or any sanitizer reports anything. Both always run, so one CI run shows both verdicts.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=()
summary=()
for kind in asan tsan; do
  echo "== scripts/sanitize.sh $kind"
  start=$SECONDS
  rc=0
  # ASan+UBSan with clang++ (with -Werror: clang's warnings are found here, at no extra build;
  # the tree also builds the fuzz targets, which scripts/fuzz.sh then runs), TSan with g++ (like
  # the Release build of scripts/test.sh).
  if [[ $kind == asan ]]; then cxx=clang++ cc=clang; else cxx=g++ cc=gcc; fi
  CXX=$cxx CC=$cc scripts/sanitize.sh "$kind" || rc=$?
  summary+=("$kind: $( ((rc)) && echo "FAILED (exit $rc)" || echo ok) in $((SECONDS - start)) s")
  if ((rc)); then failed+=("$kind"); fi
done
printf 'ci-sanitizers: %s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "ci-sanitizers: FAILED: ${failed[*]}" >&2
  exit 1
fi
