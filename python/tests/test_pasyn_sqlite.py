"""pasyn_sqlite: version, exception names, ReadPool, and pasyn_sqlite.aio."""
import asyncio
import os
import sqlite3
import threading

import pytest

import pasyn_sqlite
import pasyn_sqlite_core as core
from pasyn_sqlite import aio


def test_version_and_exception_names():
    assert isinstance(pasyn_sqlite.__version__, str)
    for name in ("Error", "Warning", "DatabaseError", "DataError", "IntegrityError",
                 "InterfaceError", "InternalError", "NotSupportedError", "OperationalError",
                 "ProgrammingError"):
        assert getattr(pasyn_sqlite, name) is getattr(sqlite3, name)
    assert issubclass(pasyn_sqlite.PoolError, Exception)
    assert issubclass(pasyn_sqlite.PoolClosedError, pasyn_sqlite.PoolError)
    assert issubclass(pasyn_sqlite.ConnectionClosedError, pasyn_sqlite.PoolError)
    assert issubclass(pasyn_sqlite.TransactionError, pasyn_sqlite.PoolError)
    assert issubclass(pasyn_sqlite.TransactionCommandError, pasyn_sqlite.TransactionError)
    # The classes pasyn_sqlite_core raises are these very classes.
    assert pasyn_sqlite.ConnectionClosedError is core.ConnectionClosedError
    assert pasyn_sqlite.PoolClosedError is core.PoolClosedError


def test_read_pool_under_many_threads(db_path):
    w = core.connect(db_path)
    w.executescript("PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (7)")
    w.close()
    pool = pasyn_sqlite.ReadPool(db_path, 3)
    results = []
    errors = []

    def reader():
        try:
            for _ in range(200):
                with pool.connection() as conn:
                    results.append(conn.execute_fetchone("SELECT x FROM t")[0])
                results.append(pool.execute_fetchall("SELECT x FROM t")[0][0])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [7] * 6400
    assert pool._pool.open_connections <= 3
    held = [pool.acquire() for _ in range(3)]
    with pytest.raises(pasyn_sqlite.PoolError):
        pool.acquire(timeout=0.05)
    with pytest.raises(pasyn_sqlite.PoolError):  # under 1 ms is 1 ms, not "wait for ever"
        pool.acquire(timeout=0.0004)
    with pytest.raises(pasyn_sqlite.PoolError):  # 0: no wait (it waited for ever)
        pool.acquire(timeout=0)
    returner = threading.Timer(0.3, held.pop().close)  # None waits until one is returned
    returner.start()
    held.append(pool.acquire())
    returner.join()
    with pytest.raises(sqlite3.OperationalError):  # read-only
        held[0].execute("INSERT INTO t VALUES (1)")
    for c in held:
        c.close()
    pool.close()
    assert pool.closed
    with pytest.raises(pasyn_sqlite.PoolClosedError):
        pool.acquire()
    with pytest.raises(pasyn_sqlite.PoolClosedError):
        pool.execute_fetchall("SELECT 1")


def test_aio_ten_thousand_writes_in_flight_from_one_loop(server, db_path):
    async def main():
        client = aio.connect(server.socket_path)
        client.client.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
        threads_before = threading.active_count()
        futures = [client.execute("INSERT INTO t (v) VALUES (?)", [i]) for i in range(10_000)]
        # All 10,000 were sent before any was awaited; no thread per call.
        assert threading.active_count() <= threads_before + 1
        changes = await asyncio.gather(*futures)
        assert sum(changes) == 10_000
        rowid = await client.execute_returning_rowid("INSERT INTO t (v) VALUES (:v)", {"v": -1})
        assert rowid == 10_001
        assert await client.execute_many("INSERT INTO t (v) VALUES (?)", [[1], [2]]) == 2
        assert await client.execute_fetchone("SELECT count(*) FROM t") == (10_003,)
        with pytest.raises(sqlite3.IntegrityError):
            await client.execute("INSERT INTO t (id) VALUES (1)")
        client.close()

    asyncio.run(main())


def test_aio_cancelled_await_leaves_the_write_to_run_once(server):
    async def main():
        client = aio.connect(server.socket_path)
        client.client.executescript("CREATE TABLE t (x)")
        tx = client.client.begin_exclusive()  # holds the writer: the next write waits
        pending = asyncio.ensure_future(client.execute("INSERT INTO t VALUES (1)"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pending, 0.1)
        assert pending.cancelled()
        tx.commit()
        await asyncio.sleep(0.2)
        # Sent once, run once, never re-sent.
        assert await client.execute_fetchall("SELECT x FROM t") == [(1,)]
        client.close()

    asyncio.run(main())


def test_aio_completion_after_the_loop_closed_is_dropped(server):
    client = aio.connect(server.socket_path)
    client.client.executescript("CREATE TABLE t (x)")
    tx = client.client.begin_exclusive()
    loop = asyncio.new_event_loop()

    async def send():
        return client.execute("INSERT INTO t VALUES (1)")

    fut = loop.run_until_complete(send())
    loop.close()
    tx.commit()  # the reply now arrives for a closed loop
    client.client.ping()
    assert client.client.execute_fetchall("SELECT x FROM t") == [(1,)]
    assert not fut.done()
    client.close()


def test_aio_transaction(server):
    async def main():
        client = aio.connect(server.socket_path)
        client.client.executescript("CREATE TABLE t (x)")
        async with client.transaction() as tx:
            await tx.execute("INSERT INTO t VALUES (?)", [1])
            assert await tx.execute_fetchone("SELECT count(*) FROM t") == (1,)
        assert tx.finished
        with pytest.raises(RuntimeError):
            async with client.transaction() as tx2:
                await tx2.execute("INSERT INTO t VALUES (2)")
                raise RuntimeError("boom")
        assert await client.execute_fetchall("SELECT x FROM t") == [(1,)]
        client.close()

    asyncio.run(main())


def test_stubs_and_py_typed_are_installed():
    import importlib.util
    for pkg in ("pasyn_sqlite_core", "pasyn_sqlite"):
        root = os.path.dirname(importlib.util.find_spec(pkg).origin)
        assert os.path.exists(os.path.join(root, "py.typed"))
        assert os.path.exists(os.path.join(root, "__init__.pyi"))


def test_stubs_name_every_public_name():
    import ast
    import importlib.util
    for pkg in ("pasyn_sqlite_core", "pasyn_sqlite"):
        module = __import__(pkg)
        root = os.path.dirname(importlib.util.find_spec(pkg).origin)
        with open(os.path.join(root, "__init__.pyi")) as f:
            tree = ast.parse(f.read())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
        missing = [n for n in module.__all__ if n not in names]
        assert not missing, (pkg, missing)
