#!/usr/bin/env bash
# Builds pasyn with a sanitizer in its own build directory and runs the whole suite under it.
#   scripts/sanitize.sh asan   AddressSanitizer (with leak checks) + UndefinedBehaviorSanitizer
#                              (build-asan/)
#   scripts/sanitize.sh tsan   ThreadSanitizer (build-tsan/), with tests/tsan.supp
# The compiler is $CXX (g++ by default; CI builds the ASan tree with clang++, so that the whole
# tree is compiled by both compilers). Warnings are errors (PASYN_WERROR=ON).
# With clang, the ASan tree is also instrumented for libFuzzer (-fsanitize=fuzzer-no-link) and
# builds the fuzz targets, so that scripts/fuzz.sh can run them without a tree of its own
# (PASYN_FUZZ_BUILD_DIR=build-asan, as CI does).
# Not the Litestream test (PASYN_LITESTREAM_TEST=OFF): 60 s beside another program at full
# speed, which scripts/test.sh runs in the Release tree; it adds no instrumented code.
# The fixed-length tests (the soaks, the change feed's load) run 8 s here instead of 20 s unless
# PASYN_SOAK_SECONDS, PASYN_ADVERSARIAL_SECONDS or PASYN_FEED_SECONDS say otherwise: they run
# alone, so their length is CI's time (about 100 s of the two trees' runs); 8 s of the mixed
# soak under TSan is still ~25,000 requests of every kind it makes. Their RSS-growth verdict is
# the Release tree's (under ASan the quarantine grows the RSS for ~10 s of this load).
# Any sanitizer report fails the run: the first error stops the process that made it, and every
# process the tests start (pasyn-writerd, the CLI, helper programs) writes its reports to
# build-KIND/sanitizer-reports/, which must stay empty.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
kind=${1:?usage: scripts/sanitize.sh asan|tsan}
extra=()
reports=$PWD/build-$kind/sanitizer-reports
case $kind in
  asan)
    flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
    if [[ ${CXX:-g++} == *clang* ]]; then
      flags="-fsanitize=fuzzer-no-link,${flags#-fsanitize=}"
      extra+=(-DPASYN_BUILD_FUZZ=ON)
      if [[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
        export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
      fi
    else
      # -Wno-maybe-uninitialized: under ASan g++ 12 warns falsely inside libstdc++'s <regex>.
      flags+=" -Wno-maybe-uninitialized"
    fi
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:log_path=$reports/asan"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" ;;
  tsan)
    flags="-fsanitize=thread"
    # -Wno-tsan: Boost.Asio's atomic_thread_fence makes g++ warn (g++ only: clang has no -Wtsan).
    # -Wno-maybe-uninitialized: g++'s guess depends on the optimiser and is often wrong at -O1;
    # the Release build keeps it.
    if [[ ${CXX:-g++} != *clang* ]]; then flags+=" -Wno-tsan -Wno-maybe-uninitialized"; fi
    export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1"
    TSAN_OPTIONS+=":log_path=$reports/tsan" ;;
  *) echo "unknown sanitizer '$kind' (asan or tsan)" >&2; exit 2 ;;
esac
source scripts/ccache-env.sh
# A tree configured with another compiler cannot switch: start it afresh.
if [[ -n ${CXX:-} && -f build-$kind/CMakeCache.txt ]] &&
  ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=.*/${CXX##*/}\$" "build-$kind/CMakeCache.txt"; then
  rm -rf "build-$kind"
fi
# -O1 -g1 (line tables): what the sanitizers' reports need (file, line and function of every
# frame), and with g++ half the compile time of RelWithDebInfo's -O2 -g.
# PASYN_UNITY_BUILD: the libraries' and tests' sources compiled in a few groups (CMakeLists.txt),
# which halves this tree's compile time from scratch, as CI builds it; the same code is
# instrumented.
cmake -S . -B "build-$kind" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" -DPASYN_WERROR=ON -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
  -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF -DPASYN_UNITY_BUILD=ON \
  -DPASYN_LITESTREAM_TEST=OFF "${extra[@]}" >/dev/null
cmake --build "build-$kind" -j2
export PASYN_SOAK_SECONDS=${PASYN_SOAK_SECONDS:-8} PASYN_ADVERSARIAL_SECONDS=${PASYN_ADVERSARIAL_SECONDS:-8}
export PASYN_FEED_SECONDS=${PASYN_FEED_SECONDS:-8}
rm -rf "$reports"
mkdir -p "$reports"
chmod 1777 "$reports"  # some tests run their child processes as another user (nobody)
rc=0
ctest --test-dir "build-$kind" --output-on-failure -j2 --timeout 600 || rc=$?
# A report file of any process is a failure, also when its test did not notice.
shopt -s nullglob
files=("$reports"/*)
if ((${#files[@]})); then
  for f in "${files[@]}"; do
    echo "==== sanitizer report $f" >&2
    cat "$f" >&2
  done
  echo "sanitize: $kind: ${#files[@]} sanitizer report(s), above" >&2
  rc=1
fi
if ((rc)); then
  echo "sanitize: $kind: FAILED" >&2
  exit "$rc"
fi
echo "sanitize: $kind: ok, no sanitizer report"
