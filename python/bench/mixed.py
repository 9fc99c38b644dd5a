"""SPEC §7's mixed workload: P processes x 10 asyncio tasks sharing 1,000 operations each
(80 % reads on the process's read connection, 20 % one-row INSERTs, each waited for), pasyn
against Python's sqlite3 (WAL, busy_timeout 5 s, autocommit). Timed from "all workers ready"
to "all done" (a barrier), and also from before the processes are spawned.

Usage: python bench/mixed.py [--processes 2 4 6] [--ops 1000]
"""
import argparse
import asyncio
import multiprocessing as mp
import os
import random
import sqlite3
import tempfile
import time

TASKS = 10


def setup(path):
    conn = sqlite3.connect(path)
    conn.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, email TEXT, age INTEGER);
        CREATE INDEX users_email ON users(email);
        CREATE TABLE events (id INTEGER PRIMARY KEY, user_id INTEGER, kind TEXT, at REAL);
        CREATE INDEX events_user ON events(user_id);
    """)
    conn.executemany("INSERT INTO users (name, email, age) VALUES (?, ?, ?)",
                     [(f"user{i}", f"user{i}@example.com", 18 + i % 60) for i in range(1000)])
    conn.commit()
    conn.close()


def plan(seed, ops):
    rnd = random.Random(seed)
    out = []
    for _ in range(ops):
        r = rnd.random()
        if r < 0.2:
            out.append(("w", rnd.randint(1, 1000)))
        else:
            out.append((rnd.choice("abc"), rnd.randint(1, 1000)))
    return out


READS = {
    "a": ("SELECT * FROM users WHERE id = ?", lambda k: [k]),
    "b": ("SELECT * FROM users WHERE age >= ? AND age < ? LIMIT 50",
          lambda k: [18 + k % 60, 18 + k % 60 + 5]),
    "c": ("SELECT COUNT(*) FROM events WHERE user_id = ?", lambda k: [k]),
}
INSERT = "INSERT INTO events (user_id, kind, at) VALUES (?, 'click', ?)"


def worker(kind, path, socket_path, seed, ops, ready, go, result):
    ops_list = plan(seed, ops)
    if kind == "pasyn":
        import pasyn_sqlite_core as core
        from pasyn_sqlite import aio
        reader = core.connect(path, core.OpenFlags.readonly())
        client = aio.connect(socket_path)

        async def write(k):
            await client.execute(INSERT, [k, time.time()])
    else:
        reader = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        writer = reader

        async def write(k):
            writer.execute(INSERT, [k, time.time()])

    def read(op, k):
        sql, params = READS[op]
        if kind == "pasyn":
            reader.execute_fetchall(sql, params(k))
        else:
            reader.execute(sql, params(k)).fetchall()

    async def task(chunk):
        for op, k in chunk:
            if op == "w":
                await write(k)
            else:
                read(op, k)

    async def run():
        await asyncio.gather(*(task(ops_list[i::TASKS]) for i in range(TASKS)))

    ready.wait()
    go.wait()
    t0 = time.perf_counter()
    asyncio.run(run())
    result.put(time.perf_counter() - t0)


def measure(kind, processes, ops):
    with tempfile.TemporaryDirectory(prefix="pasyn-bench-") as d:
        path = os.path.join(d, "bench.sqlite")
        setup(path)
        server = None
        socket_path = None
        if kind == "pasyn":
            import pasyn_sqlite_core as core
            server = core.start_writer_server(path, synchronous="full")
            socket_path = server.socket_path
        ctx = mp.get_context("fork")
        ready = ctx.Barrier(processes + 1)
        go = ctx.Barrier(processes + 1)
        result = ctx.Queue()
        spawn_start = time.perf_counter()
        procs = [ctx.Process(target=worker, args=(kind, path, socket_path, i, ops, ready, go,
                                                  result)) for i in range(processes)]
        for p in procs:
            p.start()
        ready.wait()
        start = time.perf_counter()
        go.wait()
        for p in procs:
            p.join()
        end = time.perf_counter()
        if server is not None:
            server.stop()
        total = processes * ops
        return total / (end - start), total / (end - spawn_start)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--processes", type=int, nargs="+", default=[2, 4, 6])
    ap.add_argument("--ops", type=int, default=1000)
    args = ap.parse_args()
    print("processes  sqlite3 ops/s  pasyn ops/s  ratio (from ready)  ratio (from spawn)")
    for p in args.processes:
        s_ready, s_spawn = measure("sqlite3", p, args.ops)
        q_ready, q_spawn = measure("pasyn", p, args.ops)
        print(f"{p:9d}  {s_ready:13.0f}  {q_ready:11.0f}  {q_ready / s_ready:18.2f}  "
              f"{q_spawn / s_spawn:18.2f}")


if __name__ == "__main__":
    main()
