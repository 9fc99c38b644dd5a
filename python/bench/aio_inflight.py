"""The asyncio row: one event loop keeps N one-row INSERTs in flight through pasyn_sqlite.aio
(each its own acknowledged write, group-committed by the writer), against Python's sqlite3
inserting the same rows in one transaction (a loop of execute(), then commit()). Both at
synchronous=FULL in WAL mode, on a file of the same directory. Prints rows/s and the ratio
(median of the runs).

Usage: python bench/aio_inflight.py [--rows 10000] [--runs 3]
"""
import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time

import pasyn_sqlite_core as core
from pasyn_sqlite import aio

SCHEMA = "CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT, at REAL)"
INSERT = "INSERT INTO events (user_id, kind, at) VALUES (?, 'click', ?)"


def pasyn_rows_per_s(directory, rows):
    path = os.path.join(directory, "pasyn.sqlite")
    with core.start_writer_server(path) as server:
        async def main():
            client = aio.connect(server.socket_path)
            await client.executescript(SCHEMA)
            start = time.perf_counter()
            changes = await asyncio.gather(
                *[client.execute(INSERT, [i % 1000, float(i)]) for i in range(rows)])
            elapsed = time.perf_counter() - start
            assert sum(changes) == rows
            assert (await client.execute_fetchone("SELECT count(*) FROM events"))[0] == rows
            client.close()
            return rows / elapsed

        return asyncio.run(main())


def sqlite3_rows_per_s(directory, rows):
    path = os.path.join(directory, "sqlite3.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(SCHEMA)
    start = time.perf_counter()
    conn.execute("BEGIN")
    for i in range(rows):
        conn.execute(INSERT, (i % 1000, float(i)))
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == rows
    conn.close()
    return rows / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pasyn, base = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="pasyn-aio-bench-") as d:
            pasyn.append(pasyn_rows_per_s(d, args.rows))
            base.append(sqlite3_rows_per_s(d, args.rows))
    p, b = statistics.median(pasyn), statistics.median(base)
    print(f"rows in flight: {args.rows}, runs: {args.runs}")
    print("pasyn aio rows/s:   " + ", ".join(f"{x:,.0f}" for x in pasyn) + f"  (median {p:,.0f})")
    print("sqlite3 1-tx rows/s: " + ", ".join(f"{x:,.0f}" for x in base) + f"  (median {b:,.0f})")
    print(f"ratio (median): {p / b:.2f}")


if __name__ == "__main__":
    main()
