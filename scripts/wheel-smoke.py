"""Smoke test of an installed pasyn-sqlite wheel (scripts/wheel-test.sh runs it in a minimal
Debian root): starts the writer server, writes through a MultiplexedClient, reads through
connect(), and exits non-zero on any difference."""

import os
import sys
import tempfile

import pasyn_sqlite
import pasyn_sqlite_core as sqlite

with tempfile.TemporaryDirectory(prefix="pasyn-wheel-") as d:
    db = os.path.join(d, "smoke.sqlite")
    with sqlite.start_writer_server(db) as server:
        client = sqlite.MultiplexedClient(server.socket_path)
        client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        for i in range(100):
            client.execute("INSERT INTO t (name, data) VALUES (?, ?)", [f"row {i}", bytes([i])])
        with client.begin_exclusive() as tx:
            tx.execute("UPDATE t SET name = :n WHERE id = 1", {"n": "first"})
        client.close()
        reader = sqlite.connect(db, sqlite.OpenFlags.readonly())
        rows = reader.execute_fetchall("SELECT id, name, data FROM t ORDER BY id")
        reader.close()
    expected = [(1, "first", b"\x00")] + [(i + 1, f"row {i}", bytes([i])) for i in range(1, 100)]
    if [tuple(r) for r in rows] != expected:
        sys.exit(f"wheel smoke: read back {rows[:3]}... ({len(rows)} rows), "
                 f"expected {expected[:3]}...")
print(f"wheel smoke: ok: pasyn_sqlite {pasyn_sqlite.__version__}, "
      f"SQLite {sqlite.sqlite_version()}, Python {sys.version.split()[0]}, "
      f"{len(rows)} rows written through the writer and read back")
