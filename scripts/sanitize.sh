#!/usr/bin/env bash
# Builds pasyn with a sanitizer in its own build directory and runs the whole suite under it.
#   scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
#   scripts/sanitize.sh tsan   ThreadSanitizer (build-tsan/), with tests/tsan.supp
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
kind=${1:?usage: scripts/sanitize.sh asan|tsan}
case $kind in
  asan)
    flags="-fsanitize=address,undefined -fno-omit-frame-pointer"
    export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ;;
  tsan)
    # -Wno-tsan: Boost.Asio's atomic_thread_fence makes g++ warn under -Werror.
    flags="-fsanitize=thread -Wno-tsan"
    export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp" ;;
  *) echo "unknown sanitizer '$kind' (asan or tsan)" >&2; exit 2 ;;
esac
cmake -S . -B "build-$kind" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags" \
  -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "build-$kind" -j2
ctest --test-dir "build-$kind" --output-on-failure -j2 --timeout 600
