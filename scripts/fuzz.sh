#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang into build-fuzz/ and runs each for SECONDS
# (default 30) on a scratch copy of its seed corpus (fuzz/corpus/TARGET); fails on any finding.
#   scripts/fuzz.sh [SECONDS]
# The input of a finding is kept in build-fuzz/findings/TARGET/; replay it with the target of the
# tree it ran from: build-fuzz/fuzz/pasyn-fuzz-TARGET FILE
# PASYN_FUZZ_BUILD_DIR=DIR uses a tree that is already instrumented for libFuzzer and has the
# targets (scripts/sanitize.sh asan with clang++ makes build-asan/ so; CI uses it) instead of
# configuring build-fuzz/.
# As root, the targets run as user nobody: the session target's daemon writes files wherever a
# fuzzed BACKUP or VACUUM INTO says.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: scripts/fuzz.sh [SECONDS per target, default 30]" >&2
  exit 2
fi
targets=(frames session)

scripts/install-deps.sh
# Needed only here, not by the normal build.
fuzz_packages=(
  clang               # clang 14
  libclang-rt-14-dev  # clang's libFuzzer, ASan and UBSan runtimes
  llvm-14             # llvm-symbolizer: file and line in stack traces
)
missing=()
for p in "${fuzz_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}"
  "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

# Everything in this tree is instrumented (coverage for libFuzzer, ASan, UBSan); only the fuzz
# targets are built in it.
flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
flags+=" -fno-omit-frame-pointer"
source scripts/ccache-env.sh
tree=${PASYN_FUZZ_BUILD_DIR:-build-fuzz}
if [[ -n ${PASYN_FUZZ_BUILD_DIR:-} ]]; then
  cache=$tree/CMakeCache.txt
  if ! grep -q '^PASYN_BUILD_FUZZ:BOOL=ON$' "$cache" 2>/dev/null ||
    ! grep -q '^CMAKE_CXX_FLAGS:STRING=.*fuzzer-no-link' "$cache"; then
    echo "fuzz: $tree is not a tree instrumented for libFuzzer with PASYN_BUILD_FUZZ=ON" >&2
    exit 2
  fi
  echo "fuzz: the targets of $tree"
else
  CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" -DPASYN_BUILD_FUZZ=ON \
    -DPASYN_BUILD_TESTS=OFF -DPASYN_BUILD_BENCH=OFF -DPASYN_BUILD_EXAMPLES=OFF >/dev/null
fi
cmake --build "$tree" -j2 --target pasyn-fuzz-make-corpus "${targets[@]/#/pasyn-fuzz-}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 0755 "$work"
run_as=()
if [[ $(id -u) -eq 0 ]]; then run_as=(setpriv --reuid=nobody --regid=nogroup --clear-groups --); fi

# The committed seeds should be what the encoders write today (fuzz/corpus may hold more:
# regression inputs of past findings).
"$tree/fuzz/pasyn-fuzz-make-corpus" "$work/seeds"
stale=()
for f in "$work"/seeds/*/*; do
  cmp -s "$f" "fuzz/corpus/${f#"$work/seeds/"}" || stale+=("${f#"$work/seeds/"}")
done
if ((${#stale[@]})); then
  echo "fuzz: warning: fuzz/corpus is not what pasyn-fuzz-make-corpus writes now (${stale[*]});" \
    "regenerate it with: $tree/fuzz/pasyn-fuzz-make-corpus fuzz/corpus"
fi

export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
if [[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ]]; then
  export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
fi
failed=()
for t in "${targets[@]}"; do
  dir=$work/$t
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/cwd" "$dir/tmp"
  bin=$dir/pasyn-fuzz-$t  # a copy: nobody may not be able to reach the build tree
  cp "$tree/fuzz/pasyn-fuzz-$t" "$bin"
  cp fuzz/corpus/"$t"/* "$dir/corpus/"
  cp "$work/seeds/$t"/* "$dir/corpus/"  # today's encoding of the same seeds wins
  seeds=$(find "$dir/corpus" -type f | wc -l)
  if ((${#run_as[@]})); then chown -R nobody:nogroup "$dir"; fi
  echo "== pasyn-fuzz-$t: ${seconds} s on $seeds seeds"
  rc=0
  # In a scratch directory: relative paths in a fuzzed BACKUP or VACUUM INTO land there.
  (cd "$dir/cwd" && TMPDIR=$dir/tmp "${run_as[@]}" "$bin" -max_total_time="$seconds" \
    -timeout=60 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "$dir/corpus") \
    >"$dir/log" 2>&1 || rc=$?
  execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$dir/log" | tail -1)
  per_sec=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$dir/log" | tail -1)
  inputs=$(find "$dir/corpus" -type f | wc -l)
  echo "pasyn-fuzz-$t: ${execs:-?} executions (${per_sec:-?}/s), corpus $seeds -> $inputs inputs," \
    "exit $rc"
  if ((rc != 0)); then
    failed+=("$t")
    echo "---- pasyn-fuzz-$t: last lines of its log" >&2
    grep -v -E '^#[0-9]+[[:space:]]' "$dir/log" | tail -60 >&2
    mkdir -p "build-fuzz/findings/$t"
    if compgen -G "$dir/artifacts/*" >/dev/null; then
      cp "$dir"/artifacts/* "build-fuzz/findings/$t/"
      echo "fuzz: the input is in build-fuzz/findings/$t/:" \
        "$(find "$dir/artifacts" -type f -printf '%f ')" >&2
    fi
    cp "$dir/log" "build-fuzz/findings/$t/last.log"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: FAILED: ${failed[*]} (logs in build-fuzz/findings/)" >&2
  exit 1
fi
echo "fuzz: ok, no findings in ${#targets[@]} targets"
