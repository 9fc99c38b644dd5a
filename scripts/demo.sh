#!/usr/bin/env bash
# Builds pasyn, starts pasyn-writerd on data/pasyn-demo.sqlite inside the checkout, writes through
# it with a client, reads the rows back on a direct read-only connection, then stops the daemon
# with SIGTERM. `scripts/demo.sh --keep` leaves the daemon running in the foreground instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build.sh

mkdir -p data
db="$PWD/data/pasyn-demo.sqlite"
sock="$PWD/data/pasyn-demo.sock"

echo "== starting pasyn-writerd --database $db --socket $sock"
build/daemon/pasyn-writerd --database "$db" --socket "$sock" --log-level info &
daemon=$!
trap 'kill -TERM $daemon 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { echo "pasyn-writerd did not start" >&2; exit 1; }

echo "== a client writes through the daemon; a read-only connection reads directly"
build/examples/pasyn-quickstart "$db" "$sock"

echo "== the same rows, seen by the sqlite3 shell"
sqlite3 -readonly "$db" "SELECT count(*) || ' users in ' || '$db' FROM users"

if [[ ${1:-} == --keep ]]; then
  trap - EXIT
  echo "== pasyn-writerd keeps serving $sock (pid $daemon); Ctrl-C stops it"
  wait $daemon
  exit
fi
echo "== stopping pasyn-writerd (SIGTERM)"
kill -TERM $daemon
rc=0
wait $daemon || rc=$?
trap - EXIT
echo "== pasyn-writerd exited $rc; socket removed: $([[ -e $sock ]] && echo no || echo yes)"
exit $rc
