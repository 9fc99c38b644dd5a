#!/usr/bin/env bash
# Runs the Python suite (python/tests) against an extension built with AddressSanitizer +
# UndefinedBehaviorSanitizer: pip installs ./python into a fresh venv (build/python-asan-venv)
# with the same flags as scripts/sanitize.sh asan (g++, -O1 -g1), in a build directory of its
# own (python/build/asan-*), and runs pytest with the ASan runtime preloaded into CPython
# (which is not instrumented). PYTHONMALLOC=malloc makes CPython allocate every object with
# malloc, so that ASan also sees the extension's misuse of Python objects.
# detect_leaks=0: CPython keeps much of what it allocates until exit, by design; leaks of the C++
# code are what scripts/sanitize.sh asan checks, with LeakSanitizer on.
# Any report fails the run: the first error stops the process that made it, and every process
# (pytest, the subprocesses and forked children of the tests) writes its reports to
# build/python-asan-reports/, which must stay empty.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
venv=build/python-asan-venv
reports=$PWD/build/python-asan-reports
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# -Wno-maybe-uninitialized: under ASan g++ 12 warns falsely inside libstdc++ (as in sanitize.sh).
cxxflags="$flags -Wno-maybe-uninitialized"
runtime=$(g++ -print-file-name=libasan.so)
[[ -f $runtime ]] || { echo "python-sanitize: no ASan runtime at '$runtime'" >&2; exit 2; }
# libstdc++ preloaded too: CPython does not link it, and ASan, started first, finds no
# __cxa_throw to forward to otherwise ("CHECK failed: ... real___cxa_throw" at the first C++
# exception the extension throws).
libstdcxx=$(g++ -print-file-name=libstdc++.so.6)
source scripts/ccache-env.sh
rm -rf "$venv" "$reports"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# The build requirements in the venv itself, and --no-build-isolation: nanobind's sources then
# have the same path in every run, so ccache serves the extension's objects too (pip's isolated
# build environment has a new path each time, and the extension recompiled: 4 min of 4.4).
"$venv/bin/pip" install --quiet pytest "scikit-build-core>=0.10" "nanobind>=2.0"
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$venv/bin/pip" install --no-build-isolation \
  -C build-dir="build/asan-{wheel_tag}" -C cmake.build-type=RelWithDebInfo \
  -C cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -C cmake.define.CMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -C cmake.define.CMAKE_CXX_FLAGS="$cxxflags" -C cmake.define.CMAKE_C_FLAGS="$flags" \
  -C cmake.define.CMAKE_MODULE_LINKER_FLAGS="$flags" \
  -C cmake.define.CMAKE_SHARED_LINKER_FLAGS="$flags" ./python
echo "python-sanitize: [$((SECONDS - start)) s] built"
ext=$(find "$venv" -name '_core*.so' | head -n1)
# (ldd's output captured first: grep -q in a pipe would end ldd early, which pipefail reports.)
deps=$(ldd "$ext")
if ! grep -q libasan <<<"$deps"; then
  echo "python-sanitize: $ext is not built with ASan" >&2
  exit 1
fi
mkdir -p "$reports"
rc=0
# From build/, so that the installed package is the one tested (as python-test.sh).
(
  cd build
  export LD_PRELOAD="$runtime $libstdcxx" PYTHONMALLOC=malloc
  export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:log_path=$reports/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
  "python-asan-venv/bin/python" -m pytest -q -p no:cacheprovider ../python/tests
) || rc=$?
shopt -s nullglob
files=("$reports"/*)
if ((${#files[@]})); then
  for f in "${files[@]}"; do
    echo "==== sanitizer report $f" >&2
    cat "$f" >&2
  done
  echo "python-sanitize: ${#files[@]} sanitizer report(s), above" >&2
  rc=1
fi
if ((rc)); then
  echo "python-sanitize: FAILED after $((SECONDS - start)) s" >&2
  exit "$rc"
fi
echo "python-sanitize: ok, no sanitizer report ($((SECONDS - start)) s)"
