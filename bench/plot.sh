#!/usr/bin/env bash
# bench/plot.sh: runs `pasyn-bench --sweep` and draws bench/throughput.png: rows/s of one-row
# INSERTs (each waiting for its ack) against concurrent writer threads, pasyn against direct
# SQLite connections, synchronous=full and normal, with this machine's limits for the same
# clients: the bare epoll echo (ceiling_ipc, no SQLite at all) and the single-threaded group-commit
# echo server (groupcommit); and the batching policy's effect: pasyn waiting for the last batch's
# connections before each batch (--batch-wait on; the default is off); and the I/O layout's: the
# other --writer-io than the mode's default (on at full, off at normal). The sweep's CSV is kept
# as bench/throughput.csv.
#
# Usage: bench/plot.sh [PASYN_BENCH_BINARY [pasyn-bench flags, e.g. --sweep-seconds 5]]
#        bench/plot.sh --csv FILE      (plot an existing sweep without running it)
#   The binary defaults to $PASYN_BENCH, else build/bench/pasyn-bench in the source tree.
#   Installs gnuplot-nox with apt-get when gnuplot is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csv=$here/throughput.csv
png=$here/throughput.png
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [[ ${1:-} == --csv ]]; then
  cp "${2:?--csv needs a file}" "$work/sweep.csv"
  source_csv=$work/sweep.csv
else
  bench=${1:-${PASYN_BENCH:-$here/../build/bench/pasyn-bench}}
  shift || true
  if [[ ! -x $bench ]]; then
    echo "plot.sh: no pasyn-bench at '$bench'; pass its path as the first argument" >&2
    exit 1
  fi
  "$bench" --sweep "$@" >"$work/sweep.csv"
  cp "$work/sweep.csv" "$csv"
  source_csv=$csv
fi
cat "$source_csv"

if ! command -v gnuplot >/dev/null; then
  echo "plot.sh: installing gnuplot-nox" >&2
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq gnuplot-nox >/dev/null
fi

# One data file per synchronous mode, so that each line is drawn unbroken.
for mode in full normal; do
  awk -F, -v mode="$mode" 'NR > 1 && $2 == mode' "$source_csv" >"$work/$mode.csv"
done

# pngcairo when this gnuplot has it, else the libgd png terminal.
if gnuplot -e 'set terminal' 2>&1 | grep -q pngcairo; then
  terminal='pngcairo size 1150,600 font "sans,10"'
else
  terminal='png size 1150,600'
fi

gnuplot <<EOF
set terminal $terminal noenhanced
set output "$png"
set datafile separator ","
set key outside right top vertical box
set grid xtics ytics mytics
set logscale x 2
set logscale y 10
set xrange [0.8:80]
set xtics (1, 2, 4, 8, 16, 32, 64)
set format y "%.0s%c"
set xlabel "concurrent writer threads (1 process below 4 writers, 4 processes from 4 up)"
set ylabel "rows/s (one-row INSERT, each waiting for its ack)"
set title "pasyn-writerd vs direct SQLite connections (WAL, busy_timeout, autocommit) and this machine's ceilings"
plot "$work/full.csv" using 1:3 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "pasyn, synchronous=full", \\
     "$work/full.csv" using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb "#1f77b4" title "direct, synchronous=full", \\
     "$work/normal.csv" using 1:3 with linespoints lw 2 pt 7 lc rgb "#d62728" title "pasyn, synchronous=normal", \\
     "$work/normal.csv" using 1:4 with linespoints lw 2 pt 5 dt 2 lc rgb "#d62728" title "direct, synchronous=normal", \\
     "$work/full.csv" using 1:5 with linespoints lw 1 pt 2 dt 3 lc rgb "#1f77b4" title "groupcommit (minimal program), full", \\
     "$work/normal.csv" using 1:5 with linespoints lw 1 pt 2 dt 3 lc rgb "#d62728" title "groupcommit (minimal program), normal", \\
     "$work/full.csv" using 1:7 with linespoints lw 1 pt 6 dt 4 lc rgb "#1f77b4" title "pasyn, full, --batch-wait on", \\
     "$work/normal.csv" using 1:7 with linespoints lw 1 pt 6 dt 4 lc rgb "#d62728" title "pasyn, normal, --batch-wait on", \\
     "$work/full.csv" using 1:8 with linespoints lw 1 pt 4 dt 5 lc rgb "#1f77b4" title "pasyn, full, --writer-io on", \\
     "$work/normal.csv" using 1:8 with linespoints lw 1 pt 4 dt 5 lc rgb "#d62728" title "pasyn, normal, --writer-io off", \\
     "$work/full.csv" using 1:6 with linespoints lw 2 pt 1 lc rgb "black" title "ceiling: bare echo (no SQLite)"
EOF
echo "plot.sh: wrote $png" >&2
