#!/usr/bin/env python3
"""pasyn-bench --json: the acked-writer rows carry their ceilings and say what their ratio divides.

writers16_full/normal also carry the minimal group-commit servers measured in the same run
(groupcommit16, groupcommit16_gathered and, at full, groupcommit16_pipelined) and
bound_ratio = the best of them / the row's ceiling. writers64_full, inflight1000 and the idle round
trip carry the bound of their own minimal program (ceiling_ipc64, groupcommit_pipelined,
commit_pingpong_us); every bound row has of_bound = ratio / bound_ratio. feed16_full/normal divide
pasyn with 2 change-feed subscribers by pasyn without.

Runs the real pasyn-bench (which starts the real pasyn-writerd) on its shortest settings, one row
at a time, and checks the shape and the arithmetic of the output, never the speed: the figures of
a 0.3 s run on a shared machine mean nothing, but ratio = pasyn / ceiling must hold exactly.

Usage: bench_json_test.py PATH_TO_PASYN_BENCH
"""
import json
import math
import subprocess
import sys

BENCH = sys.argv[1]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)


def close(a, b):
    return (isinstance(a, (int, float)) and isinstance(b, (int, float)) and
            math.isclose(a, b, rel_tol=1e-4))


def positive(row, key):
    v = row.get(key)
    check(isinstance(v, (int, float)) and v > 0, f"{row.get('name')}: {key} = {v!r}, not > 0")
    return v if isinstance(v, (int, float)) else float("nan")


def run(only):
    proc = subprocess.run(
        [BENCH, "--json", "--quick", "--reps", "1", "--seconds", "0.3", "--only", only],
        capture_output=True, text=True, timeout=240)
    check(proc.returncode == 0, f"--only {only}: exit {proc.returncode}: {proc.stderr[-2000:]}")
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        failures.append(f"--only {only}: not JSON ({e}): {proc.stdout[:500]}")
        return {}
    rows = {r["name"]: r for r in doc["rows"]}
    for r in rows.values():
        check("error" not in r, f"{r['name']}: {r.get('error')}")
        check(isinstance(r.get("ratio_of"), str) and r["ratio_of"],
              f"{r['name']}: no ratio_of saying what ratio divides")
    return rows


def check_bound(r):
    """The group-commit servers (designs of the leanest group commit, measured beside the
    ceilings) and the best one's share."""
    designs = ["groupcommit16", "groupcommit16_gathered"]
    if r["name"] == "writers16_full":
        designs.append("groupcommit16_pipelined")
    else:
        check("groupcommit16_pipelined" not in r,
              f"{r['name']}: a pipelined fdatasync() is a design for synchronous=full only")
    rates = []
    for d in designs:
        rates.append(positive(r, d))
        positive(r, d + "_p50_us")
        check(r.get(d + "_p99_us", 0) >= r.get(d + "_p50_us", math.inf), f"{r['name']}: {d} p99 < p50")
        batch = positive(r, d + "_rows_per_commit")
        check(1 <= batch <= 16, f"{r['name']}: {d}: {batch} rows per commit with 16 synchronous clients")
    best = max(rates)
    check(close(r.get("bound_ratio"), best / r["baseline"]),
          f"{r['name']}: bound_ratio {r.get('bound_ratio')} != the best group-commit server / baseline")
    check(close(r.get("of_bound"), r["pasyn"] / best),
          f"{r['name']}: of_bound != pasyn / the best group-commit server")


def check_of_bound(r):
    check(close(r.get("of_bound"), r["ratio"] / r.get("bound_ratio", math.nan)),
          f"{r['name']}: of_bound {r.get('of_bound')} != ratio / bound_ratio")


def check_own_bound(r, key, latency=False):
    """A row's bound (add_bound): `key` is the minimal program's figure in the row's unit."""
    bound = positive(r, key)
    expected = r["baseline"] / bound if latency else bound / r["baseline"]
    check(close(r.get("bound_ratio"), expected),
          f"{r['name']}: bound_ratio {r.get('bound_ratio')} != {key} against the baseline")
    check_of_bound(r)


def check_direct(r):
    direct = positive(r, "direct")
    check(close(r.get("direct_ratio"), r["pasyn"] / direct),
          f"{r['name']}: direct_ratio {r.get('direct_ratio')} != pasyn / direct")


full = run("writers16_full").get("writers16_full")
check(full is not None, "no writers16_full row")
if full:
    check(full["target"] == 0.6, f"writers16_full target {full['target']}")
    check(full.get("ratio_of") == "pasyn / min(ceiling_durable16, ceiling_ipc16)",
          f"ratio_of: {full.get('ratio_of')}")
    ipc = positive(full, "ceiling_ipc16")
    durable = positive(full, "ceiling_durable16")
    t_commit = positive(full, "t_commit16_us")
    t_rtt = positive(full, "t_rtt_us")
    check(close(durable, 16e6 / (t_commit + t_rtt)),
          f"ceiling_durable16 {durable} != 16 / (t_commit16 {t_commit} us + t_rtt {t_rtt} us)")
    check(close(full["baseline"], min(ipc, durable)), "writers16_full baseline != the ceiling")
    check(close(full["ratio"], full["pasyn"] / full["baseline"]), "writers16_full ratio")
    check_direct(full)
    check_bound(full)

normal = run("writers16_normal").get("writers16_normal")
check(normal is not None, "no writers16_normal row")
if normal:
    check(normal["target"] == 0.7, f"writers16_normal target {normal['target']}")
    check(normal.get("ratio_of") == "pasyn / ceiling_ipc16", f"ratio_of: {normal.get('ratio_of')}")
    check(close(normal["baseline"], positive(normal, "ceiling_ipc16")),
          "writers16_normal baseline != ceiling_ipc16")
    check("ceiling_durable16" not in normal, "writers16_normal: durable ceiling at normal")
    check(close(normal["ratio"], normal["pasyn"] / normal["baseline"]), "writers16_normal ratio")
    check_direct(normal)
    check_bound(normal)

w64 = run("writers64_full").get("writers64_full")
check(w64 is not None, "no writers64_full row")
if w64:
    check(w64["target"] == 15, f"writers64_full target {w64['target']}")
    check(w64.get("ratio_of") == "pasyn / direct", f"ratio_of: {w64.get('ratio_of')}")
    check(close(w64["baseline"], w64.get("direct")), "writers64_full baseline != direct")
    check(close(w64["ratio"], w64["pasyn"] / w64["baseline"]), "writers64_full ratio")
    check_direct(w64)
    check_own_bound(w64, "ceiling_ipc64")
    positive(w64, "groupcommit64")

inflight = run("inflight1000").get("inflight1000")
check(inflight is not None, "no inflight1000 row")
if inflight:
    check(inflight["target"] == 0.5, f"inflight1000 target {inflight['target']}")
    check_own_bound(inflight, "groupcommit_pipelined")

feed = run("feed16")
check(set(feed) == {"feed16_full", "feed16_normal"}, f"feed rows: {sorted(feed)}")
for r in feed.values():
    check(r["target"] == 0.9, f"{r['name']} target {r['target']}")
    check(r.get("ratio_of") == "pasyn with 2 change-feed subscribers / pasyn without",
          f"{r['name']} ratio_of: {r.get('ratio_of')}")
    check(close(r["ratio"], r["pasyn"] / r["baseline"]), f"{r['name']} ratio")
    check(isinstance(r.get("subscriber_seen_share"), (int, float)),
          f"{r['name']}: no subscriber_seen_share")
    positive(r, "stalled_ratio")

rtt = run("idle_round_trip")
check(set(rtt) == {"idle_round_trip_p50", "idle_round_trip_p99"}, f"idle rows: {sorted(rtt)}")
if "idle_round_trip_p50" in rtt:
    p50 = rtt["idle_round_trip_p50"]
    check(p50["target"] == 0.67, f"idle_round_trip_p50 target {p50['target']}")
    check(close(p50["ratio"], p50["baseline"] / p50["pasyn"]), "idle p50 ratio != bare / pasyn")
    check_own_bound(p50, "commit_pingpong_us", latency=True)
if "idle_round_trip_p99" in rtt:
    check_own_bound(rtt["idle_round_trip_p99"], "commit_pingpong_us", latency=True)

for f in failures:
    print("FAIL:", f)
print("bench_json_test:", "FAILED" if failures else "ok")
sys.exit(1 if failures else 0)
