#!/usr/bin/env bash
# The installed pasyn package under systemd as PID 1: boots this machine's own /usr (with the
# .debs installed on it) in a container,
#   systemd-nspawn --directory=/ --volatile=yes --boot --register=no --keep-unit
# and runs commands in it with nsenter. /var, /etc and /run are fresh in the container, so the
# package's sysusers.d and tmpfiles.d files create the user pasyn and its directories at boot.
#
#   scripts/systemd-test.sh [APPS_DIR]
# APPS_DIR (optional) holds consumer-pkgconfig and consumer-cmake, built against /usr, which run
# in the container as a user in group pasyn. Called by scripts/package-test.sh; needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
apps=${1:-}
[[ $(id -u) -eq 0 ]] || exec sudo "$0" "$@"
command -v systemd-nspawn >/dev/null || { echo "systemd-test: systemd-nspawn missing" >&2; exit 1; }

instance=t
db=/var/lib/pasyn/$instance.sqlite
unit=pasyn-writerd@$instance
work=$(mktemp -d)
chmod 0755 "$work"
nspawn=""

cleanup() {
  local rc=$?
  if [[ -n $nspawn ]]; then
    if ((rc)) && [[ -n ${pid1:-} ]]; then
      echo "== journal of $unit" >&2
      in_container journalctl --no-pager -n 80 -u "$unit.service" -u "$unit.socket" >&2 || true
    fi
    [[ -n ${pid1:-} ]] && in_container systemctl poweroff >/dev/null 2>&1 || true
    for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null || true
    wait "$nspawn" 2>/dev/null || true
  fi
  if ((rc)); then
    echo "== container console (last lines)" >&2
    tail -n 30 "$work/console.log" >&2 || true
    echo "systemd-test: FAILED (exit $rc)" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT
trap "exit 143" TERM

fail() {
  echo "systemd-test: $*" >&2
  exit 1
}
in_container() { nsenter --target "$pid1" --mount --uts --ipc --net --pid -- "$@"; }
as_user() {  # USER CMD...: CMD in the container as USER with its groups
  local user=$1
  shift
  in_container setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
}

echo "== booting /usr under systemd in a container"
bind=()
if [[ -n $apps ]]; then bind=(--bind-ro="$apps:/opt/pasyn-apps"); fi
systemd-nspawn --directory=/ --volatile=yes --boot --register=no --keep-unit \
  --machine="pasyn-test-$$" "${bind[@]}" -- systemd.firstboot=off \
  >"$work/console.log" 2>&1 </dev/null &
nspawn=$!
pid1=""
for _ in $(seq 300); do
  kill -0 "$nspawn" 2>/dev/null || fail "systemd-nspawn exited (console above)"
  child=$(pgrep -P "$nspawn" | head -n1 || true)
  if [[ -n $child && $(cat "/proc/$child/comm" 2>/dev/null) == systemd ]]; then
    pid1=$child
    break
  fi
  sleep 0.1
done
[[ -n $pid1 ]] || fail "no systemd in the container after 30 s"
# Until the boot has finished (and before that, until PID 1's bus answers at all).
state=""
for _ in $(seq 600); do
  state=$(in_container systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 0.2
done
echo "container PID 1 is $pid1 (host pid), system state: $state"
[[ $state == running || $state == degraded ]] || fail "the container did not boot: $state"
in_container getent passwd pasyn || fail "sysusers did not create the user pasyn"
in_container stat -c '%n %U:%G %a' /var/lib/pasyn /run/pasyn

echo "== systemd-analyze verify (the installed units, under systemd as PID 1)"
in_container systemd-analyze --man=no verify "$unit.socket" "$unit.service"

echo "== users in group pasyn: pasyn-app (writes), pasyn-reader (only reads)"
in_container useradd --system --user-group --no-create-home --groups pasyn pasyn-app
in_container useradd --system --user-group --no-create-home --groups pasyn pasyn-reader
in_container id pasyn-app
in_container id pasyn-reader

echo "== a database that exists before the daemon ever ran on it (no -wal, no -shm)"
# Created as user pasyn with the unit's umask, as an administrator restoring a copy would.
in_container setpriv --reuid=pasyn --regid=pasyn --init-groups -- sh -c "umask 0007 &&
  sqlite3 $db 'PRAGMA journal_mode=WAL; CREATE TABLE kv (k TEXT, v INTEGER);
               INSERT INTO kv VALUES (\"before\", 1);'" >/dev/null
in_container test ! -e "$db-wal" || fail "$db-wal exists before the socket started"

echo "== systemctl start $unit.socket"
in_container systemctl start "$unit.socket"
in_container test -S "/run/pasyn/$instance.sock" || fail "no socket /run/pasyn/$instance.sock"
[[ $(in_container systemctl is-active "$unit.service" || true) == inactive ]] ||
  fail "$unit.service started without a client"
in_container stat -c '%n %U:%G %a' "$db" "$db-wal" "$db-shm"

echo "== a reader in group pasyn before the daemon ever ran"
out=$(as_user pasyn-reader pasyn query --database "$db" "SELECT count(*) FROM kv")
echo "$out"
[[ $out == *1* ]] || fail "the reader did not read the database before the daemon ran"

echo "== writes through pasyn --instance $instance (socket activation)"
as_user pasyn-app pasyn --instance "$instance" exec "INSERT INTO kv VALUES (?, ?)" during 2
[[ $(in_container systemctl is-active "$unit.service") == active ]] || fail "not activated"
in_container systemctl show -p Type -p StatusText -p MainPID "$unit.service"
if [[ -n $apps ]]; then
  for app in consumer-pkgconfig consumer-cmake; do
    as_user pasyn-app "/opt/pasyn-apps/$app" "/run/pasyn/$instance.sock" "$db"
  done
fi
as_user pasyn-app pasyn --instance "$instance" stats
echo "== a reader in group pasyn while the daemon runs"
as_user pasyn-reader pasyn query --database "$db" "SELECT k, count(*) FROM kv GROUP BY k"

echo "== systemctl stop $unit.service"
in_container systemctl stop "$unit.service"
result=$(in_container systemctl show -p Result --value "$unit.service")
echo "Result=$result"
[[ $result == success ]] || fail "the stop ended in Result=$result"
echo "== a reader in group pasyn after the stop"
out=$(as_user pasyn-reader pasyn query --database "$db" "SELECT count(*) FROM kv WHERE k = 'during'")
echo "$out"
[[ $out == *1* ]] || fail "the reader did not read after the stop"

echo "== the watchdog restarts a daemon whose writer hangs"
# A short watchdog, and a busy timeout longer than it: a writer lock held by another process
# makes the writer wait in SQLite's busy handler, where it makes no progress.
in_container mkdir -p "/run/systemd/system/$unit.service.d"
printf '[Service]\nWatchdogSec=3s\n' | in_container tee "/run/systemd/system/$unit.service.d/wd.conf" >/dev/null
printf 'busy-timeout = 60000\n' | in_container tee "/etc/pasyn/$instance.conf" >/dev/null
in_container systemctl daemon-reload
as_user pasyn-app pasyn --instance "$instance" ping >/dev/null
restarts_before=$(in_container systemctl show -p NRestarts --value "$unit.service")
# The lock holder: user pasyn (it may write the database), BEGIN IMMEDIATE held for 60 s.
in_container setpriv --reuid=pasyn --regid=pasyn --init-groups -- sh -c \
  "(echo 'BEGIN IMMEDIATE; INSERT INTO kv VALUES (\"lock\", 0);'; sleep 60) | sqlite3 $db" &
holder=$!
sleep 1
as_user pasyn-app pasyn --instance "$instance" --timeout 30000 exec \
  "INSERT INTO kv VALUES ('hung', 1)" >/dev/null 2>&1 &
writer=$!
restarted=""
for _ in $(seq 300); do
  restarts=$(in_container systemctl show -p NRestarts --value "$unit.service")
  if ((restarts > restarts_before)); then restarted=yes; break; fi
  sleep 0.1
done
in_container pkill -u pasyn -x sqlite3 || true
in_container pkill -u pasyn -x sleep || true
kill "$writer" 2>/dev/null || true
wait "$holder" "$writer" 2>/dev/null || true
in_container journalctl --no-pager -u "$unit.service" | grep -i watchdog | tail -n 3 || true
[[ -n $restarted ]] || fail "the hung daemon was not restarted by the watchdog within 30 s"
echo "restarted by the watchdog (NRestarts $restarts_before -> $restarts)"
in_container rm -rf "/run/systemd/system/$unit.service.d" "/etc/pasyn/$instance.conf"
in_container systemctl daemon-reload
for _ in $(seq 100); do
  as_user pasyn-app pasyn --instance "$instance" ping >/dev/null 2>&1 && break
  sleep 0.1
done
as_user pasyn-app pasyn --instance "$instance" ping

echo "== systemd-analyze security $unit.service"
in_container systemd-analyze security --no-pager "$unit.service" | tail -n 1

in_container systemctl stop "$unit.socket" "$unit.service"
echo "systemd-test: ok"
