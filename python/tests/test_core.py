"""pasyn_sqlite_core: every name of PYTHON-API.md, against a real in-process writer server.

Over 600 lines: one test or more per name of the document, in one file so that a name without
a test shows; the async layer, the change feed, timeouts, signals (test_signals.py) and the
pasyn_sqlite package have files of their own.
"""
import inspect
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import pasyn_sqlite_core as core


def test_seed_quick_start_runs_unchanged(tmpdir_path):
    script = os.path.join(os.path.dirname(__file__), "quickstart.py")
    out = subprocess.run([sys.executable, script], cwd=tmpdir_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[(1, 'Alice', 'alice@example.com')]"


def test_writer_server_handle(db_path):
    server = core.start_writer_server(db_path)
    assert isinstance(server, core.WriterServerHandle)
    assert server.socket_path == core.default_socket_path(db_path)
    assert os.path.exists(server.socket_path)
    server.shutdown()
    server.join()
    assert not os.path.exists(server.socket_path)
    server.stop()  # idempotent


def test_writer_server_context_manager_and_socket_path(tmpdir_path):
    sock = os.path.join(tmpdir_path, "w.sock")
    with core.start_writer_server(os.path.join(tmpdir_path, "a.db"), sock) as server:
        assert server.socket_path == sock
        assert core.MultiplexedClient(sock).ping()
    assert not os.path.exists(sock)


def test_start_writer_server_options(tmpdir_path):
    with core.start_writer_server(os.path.join(tmpdir_path, "b.db"), lock_wait=0,
                                  transaction_idle_timeout=1.0) as server:
        c = core.multiplexed_client(server.socket_path)
        c.executescript("CREATE TABLE t (x)")
        other = core.MultiplexedClient(server.socket_path)  # connected before the idle clock runs
        tx = c.begin_exclusive()
        with pytest.raises(core.TimeoutError):  # lock_wait=0: the seed's fail-at-once
            other.execute("INSERT INTO t VALUES (1)")
        time.sleep(2.5)  # idle longer than transaction_idle_timeout: rolled back
        with pytest.raises(core.OperationalError) as info:
            tx.execute("INSERT INTO t VALUES (2)")
        assert tx.finished
        assert "idle" in str(info.value).lower()


def test_types_round_trip(client, db_path):
    client.executescript("CREATE TABLE t (a, b, c, d, e, f, g)")
    big = 2**63 - 1
    client.execute("INSERT INTO t VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [None, True, big, 2.5, "héllo", b"\x00\xff", bytearray(b"ab")])
    client.execute("INSERT INTO t (a) VALUES (?)", (memoryview(b"mv"),))
    with core.connect(db_path, core.OpenFlags.readonly()) as conn:
        rows = conn.execute_fetchall("SELECT * FROM t")
    assert rows[0] == (None, 1, big, 2.5, "héllo", b"\x00\xff", b"ab")
    assert rows[1][0] == b"mv"
    # Python's sqlite3 raises OverflowError here; so does pasyn, for every way a value is passed.
    with pytest.raises(OverflowError):
        client.execute("INSERT INTO t (a) VALUES (?)", [2**63])
    with pytest.raises(OverflowError):
        client.execute("INSERT INTO t (a) VALUES (?)", -(2**63) - 1)
    with pytest.raises(OverflowError):
        client.execute("INSERT INTO t (a) VALUES (:a)", {"a": 2**64})
    with core.connect(db_path, core.OpenFlags.readonly()) as conn:
        with pytest.raises(OverflowError):
            conn.execute_fetchone("SELECT ?", [2**64])
    with pytest.raises(TypeError):
        client.execute("INSERT INTO t (a) VALUES (?)", [object()])


def test_arguments_of_the_right_type_that_do_not_convert_raise_what_sqlite3_raises(
        client, tmpdir_path):
    # A str with a lone surrogate has no UTF-8: UnicodeEncodeError, as sqlite3 raises it, on
    # every kind of object that takes SQL (it was a TypeError naming the signatures).
    lone = "SELECT '\ud800'"
    with pytest.raises(UnicodeEncodeError):
        client.execute(lone)
    with pytest.raises(UnicodeEncodeError):
        client.execute_fetchall(lone)
    with client.begin_exclusive() as tx:
        with pytest.raises(UnicodeEncodeError):
            tx.execute(lone)
    with pytest.raises(UnicodeEncodeError):
        client.execute("SELECT ?", ["\udfff"])
    with core.Connection.memory() as conn:
        with pytest.raises(UnicodeEncodeError):
            conn.execute_fetchall(lone)
        with pytest.raises(UnicodeEncodeError):
            conn.cursor(lone)
        # Numbers out of a C int's range: OverflowError, not TypeError.
        with pytest.raises(OverflowError):
            conn.set_busy_timeout(2**40)
        with pytest.raises(TypeError):
            conn.set_busy_timeout(1.5)
        conn.set_busy_timeout(100)
        cursor = conn.cursor("SELECT 1 UNION ALL SELECT 2")
        with pytest.raises(OverflowError):
            cursor.fetchmany(2**70)
        with pytest.raises(OverflowError):
            cursor.arraysize = 2**70
        cursor.arraysize = 2
        assert cursor.fetchmany() == [(1,), (2,)]
    with pytest.raises(UnicodeEncodeError):
        core.Connection.shared_memory("\ud800")
    # Paths as sqlite3.connect takes them: ValueError for an embedded NUL, TypeError for what is
    # not a path, bytes allowed.
    nul = os.path.join(tmpdir_path, "a\0b.sqlite")
    with pytest.raises(ValueError):
        core.connect(nul)
    with pytest.raises(ValueError):
        core.Connection(nul)
    with pytest.raises(ValueError):
        core.ReadPool(nul, 1)
    with pytest.raises(ValueError):
        core.MultiplexedClient(nul)
    with pytest.raises(ValueError):
        core.start_writer_server(nul)
    with pytest.raises(ValueError):
        core.default_socket_path(nul)
    with pytest.raises(TypeError):
        core.connect(3.5)
    with pytest.raises(OverflowError):
        core.ReadPool(os.path.join(tmpdir_path, "p.sqlite"), -1)
    raw = os.fsencode(os.path.join(tmpdir_path, "bytes.sqlite"))
    with core.connect(raw) as conn:
        assert conn.execute_fetchone("SELECT 1") == (1,)
    assert os.path.exists(os.fsdecode(raw))
    # The feed's arguments likewise.
    with pytest.raises(OverflowError):
        client.subscribe(["t"], after_seq=-1)
    with pytest.raises(OverflowError):
        client.subscribe(["t"], after_seq=2**64)
    with pytest.raises(UnicodeEncodeError):
        client.subscribe(["\ud800"])
    with pytest.raises(TypeError):
        client.subscribe("t")


def test_scalar_parameter_and_named_parameters_bind_by_name(client, db_path):
    client.executescript("CREATE TABLE t (a, b)")
    client.execute("INSERT INTO t (a) VALUES (?)", 5)  # one scalar: one parameter
    # Keys in the opposite order of the statement's parameters: bound by name.
    client.execute("INSERT INTO t VALUES (:a, :b)", {"b": "B", "a": "A"})
    client.execute("INSERT INTO t VALUES (@a, $b)", {"@a": 1, "$b": 2})
    assert client.execute_returning_rowid("INSERT INTO t VALUES (:a, :b)", {"b": 0, "a": 0}) == 4
    assert client.execute_many("INSERT INTO t VALUES (:a, :b)",
                               [{"b": 1, "a": 2}, {"a": 3, "b": 4}]) == 2
    conn = core.connect(db_path, core.OpenFlags.readonly())
    assert conn.execute_fetchone("SELECT a, b FROM t WHERE rowid = 2") == ("A", "B")
    assert conn.execute_fetchone("SELECT b FROM t WHERE a = :a", {"a": 3}) == (4,)
    with pytest.raises(core.ProgrammingError):
        client.execute("INSERT INTO t VALUES (:a, :b)", {"a": 1, "c": 2})
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute_fetchone("SELECT :x", {"y": 1})


def test_connection_methods_and_properties(tmpdir_path):
    path = os.path.join(tmpdir_path, "c.db")
    conn = core.Connection(path)  # read-write, created
    assert conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)") == 0
    assert conn.execute("INSERT INTO t (v) VALUES (?)", ["x"]) == 1
    assert conn.last_insert_rowid == 1
    assert conn.changes == 1
    conn.executescript("INSERT INTO t (v) VALUES ('y'); INSERT INTO t (v) VALUES ('z');")
    assert conn.total_changes == 3
    assert conn.execute_fetchone("SELECT v FROM t WHERE id = 9") is None
    assert conn.get_column_names("SELECT id AS k, v FROM t") == ["k", "v"]
    assert not conn.in_transaction
    conn.begin()
    assert conn.in_transaction
    conn.execute("DELETE FROM t")
    conn.rollback()
    assert conn.execute_fetchone("SELECT count(*) FROM t") == (3,)
    conn.begin()
    conn.execute("DELETE FROM t WHERE id = 1")
    conn.commit()
    conn.set_busy_timeout(100)
    conn.interrupt()  # nothing running: harmless
    conn.close()
    with pytest.raises(core.ConnectionClosedError):
        conn.execute_fetchall("SELECT 1")


def test_open_flags():
    f = core.OpenFlags.readonly()
    assert isinstance(f.uri(), core.OpenFlags)
    assert (f | core.OpenFlags.readonly().uri()) == f.uri()
    both = core.OpenFlags.readwrite() | core.OpenFlags.create()
    assert both.memory().shared_cache() != both
    # Other types compare unequal, as Python's own do (probe41: a TypeError).
    assert f != None and not (f == 1) and f in [None, f]  # noqa: E711
    with pytest.raises(core.ProgrammingError):
        core.connect(":memory:", core.OpenFlags.readonly() | core.OpenFlags.create())


def test_memory_and_shared_memory():
    a = core.Connection.memory()
    a.execute("CREATE TABLE t (x)")
    b = core.Connection.memory()
    with pytest.raises(core.OperationalError):
        b.execute_fetchall("SELECT * FROM t")
    s1 = core.Connection.shared_memory("pytest-shared")
    s1.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
    s2 = core.Connection.shared_memory("pytest-shared")
    assert s2.execute_fetchall("SELECT x FROM t") == [(1,)]
    u = core.connect("file:pytest-uri?mode=memory&cache=shared",
                     (core.OpenFlags.readwrite() | core.OpenFlags.create()).uri())
    u.execute("CREATE TABLE q (x)")


def test_cursor_streams_a_large_result():
    conn = core.Connection.memory()
    endless = ("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
               "SELECT i, 'row' AS label FROM n")
    cur = conn.cursor(endless)  # materialising it would never return
    assert isinstance(cur, core.Cursor)
    assert cur.description == (("i", None, None, None, None, None, None),
                               ("label", None, None, None, None, None, None))
    assert cur.fetchone() == (1, "row")
    assert cur.fetchmany(2) == [(2, "row"), (3, "row")]
    assert len(cur.fetchmany()) == 1  # arraysize
    for row in cur:
        if row[0] == 100_000:
            break
    cur.execute()
    assert cur.fetchone() == (1, "row")
    small = conn.cursor("SELECT ? UNION ALL SELECT ?", [1, 2])
    assert small.fetchall() == [(1,), (2,)]
    assert small.fetchone() is None
    assert list(conn.cursor("SELECT :v", {"v": 3})) == [(3,)]


def test_client_methods(client):
    assert client.ping()
    client.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v UNIQUE)")
    assert client.execute("INSERT INTO t (v) VALUES (?)", ["a"]) == 1
    assert client.execute_returning_rowid("INSERT INTO t (v) VALUES (?)", ["b"]) == 2
    with pytest.raises(core.IntegrityError):  # atomic: nothing of the batch is written
        client.execute_many("INSERT INTO t (v) VALUES (?)", [["c"], ["a"]])
    assert client.execute_many("INSERT INTO t (v) VALUES (?)", [["c"], ["d"]]) == 2
    assert client.execute_fetchall("SELECT v FROM t ORDER BY id") == [("a",), ("b",), ("c",),
                                                                       ("d",)]
    assert client.execute_fetchone("SELECT v FROM t WHERE id = ?", [4]) == ("d",)


def test_exceptions_are_sqlite_error_and_sqlite3_classes(client):
    client.executescript("CREATE TABLE t (v UNIQUE)")
    client.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(core.SqliteError) as info:
        client.execute("INSERT INTO t VALUES (1)")
    e = info.value
    assert isinstance(e, sqlite3.IntegrityError)
    assert isinstance(e, core.IntegrityError)
    assert e.sqlite_errorcode == sqlite3.SQLITE_CONSTRAINT_UNIQUE
    assert e.sqlite_errorname == "SQLITE_CONSTRAINT_UNIQUE"
    # An extended code this Python's sqlite3 may not know is still named for itself, never for
    # its primary code (SQLITE_CONSTRAINT_DATATYPE: a STRICT table's type check).
    client.executescript("CREATE TABLE s (n INTEGER) STRICT")
    with pytest.raises(core.IntegrityError) as strict:
        client.execute("INSERT INTO s VALUES ('x')")
    assert strict.value.sqlite_errorcode == 3091
    assert strict.value.sqlite_errorname == "SQLITE_CONSTRAINT_DATATYPE"
    with pytest.raises(sqlite3.OperationalError):
        client.execute("INSERT INTO nowhere VALUES (1)")
    with pytest.raises(sqlite3.ProgrammingError):
        client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
    assert issubclass(core.TimeoutError, TimeoutError)
    assert issubclass(core.TimeoutError, core.SqliteError)
    for name in ("ConnectionLostError", "ConnectionClosedError", "ProtocolError"):
        assert issubclass(getattr(core, name), Exception)


def test_every_public_callable_has_a_signature():
    # inspect.signature() raised ValueError on every nanobind function (probe30).
    for name in core.__all__:
        obj = getattr(core, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            continue
        if callable(obj) and not isinstance(obj, type):
            inspect.signature(obj)
        for member_name, member in vars(obj).items() if isinstance(obj, type) else ():
            if not member_name.startswith("_") and callable(member):
                inspect.signature(getattr(obj, member_name))
    params = inspect.signature(core.MultiplexedClient.execute).parameters
    assert list(params) == ["self", "sql", "params", "timeout"]
    assert params["params"].default is None
    assert params["timeout"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(core.connect).parameters) == ["path", "flags"]
    for cls in (core.Connection, core.MultiplexedClient, core.ReadPool):  # the constructible
        assert list(inspect.signature(cls).parameters)[0] in ("path", "socket_path")
    assert list(inspect.signature(core.MultiplexedClient).parameters)[0] == "socket_path"
    assert list(inspect.signature(core.start_writer_server).parameters)[:2] == [
        "database_path", "socket_path"]
    assert core.OpenFlags.readonly().bits == core.OpenFlags.readonly().bits  # still static


def test_join_returns_when_the_server_stops(db_path):
    # join() waits in slices (Ctrl-C is seen between them), and returns once the server stopped.
    server = core.start_writer_server(db_path)
    stopper = threading.Timer(0.2, server.shutdown)
    stopper.start()
    started = time.monotonic()
    server.join()
    assert 0.15 < time.monotonic() - started < 10
    assert not server.running
    stopper.join()


def test_paths_may_be_path_objects(tmpdir_path):
    # As sqlite3.connect takes them (probe41: a TypeError).
    db = pathlib.Path(tmpdir_path) / "p.db"
    with core.start_writer_server(db, pathlib.Path(tmpdir_path) / "p.sock") as server:
        assert server.socket_path == str(pathlib.Path(tmpdir_path) / "p.sock")
        with core.MultiplexedClient(pathlib.Path(server.socket_path)) as c:
            c.executescript("CREATE TABLE t (x); INSERT INTO t VALUES (1)")
        with core.connect(db, core.OpenFlags.readonly()) as conn:
            assert conn.execute_fetchone("SELECT x FROM t") == (1,)
        pool = core.ReadPool(db, 1)
        with pool.acquire() as conn:
            assert conn.execute_fetchone("SELECT count(*) FROM t") == (1,)
        pool.close()
    assert core.default_socket_path(db) == core.default_socket_path(str(db))


def test_closed_client_raises_connection_closed(server):
    c = core.MultiplexedClient(server.socket_path)
    c.close()
    with pytest.raises(core.ConnectionClosedError):
        c.execute("SELECT 1")
    # As sqlite3 raises for a closed connection (probe30: `except sqlite3.Error` missed it),
    # and the module's own SqliteError and ProgrammingError (probe41: neither caught it).
    for kind in (sqlite3.ProgrammingError, core.ProgrammingError, core.SqliteError):
        with pytest.raises(kind):
            c.execute("SELECT 1")


def test_lost_writer_raises_connection_lost(db_path, tmpdir_path):
    server = core.start_writer_server(db_path)
    c = core.MultiplexedClient(server.socket_path)
    server.stop()
    with pytest.raises(core.ConnectionLostError):
        c.execute("CREATE TABLE t (x)")


def test_shutdown_server(db_path):
    server = core.start_writer_server(db_path)
    core.MultiplexedClient(server.socket_path).shutdown_server()
    server.join()
    assert not server.running


def test_begin_exclusive_transaction(client, db_path):
    client.executescript("CREATE TABLE t (x)")
    with client.begin_exclusive() as tx:
        assert isinstance(tx, core.Transaction)
        assert isinstance(tx.token, int)
        tx.execute("INSERT INTO t VALUES (?)", [1])
        assert tx.execute_returning_rowid("INSERT INTO t VALUES (2)") == 2
        assert tx.execute_many("INSERT INTO t VALUES (?)", [[3], [4]]) == 2
        tx.executescript("INSERT INTO t VALUES (5)")
        assert tx.execute_fetchone("SELECT count(*) FROM t") == (5,)
        assert len(tx.execute_fetchall("SELECT x FROM t")) == 5
    assert tx.finished
    with pytest.raises(core.ProgrammingError, match="already finished"):
        tx.execute("INSERT INTO t VALUES (6)")
    with pytest.raises(RuntimeError):
        with client.begin_exclusive() as tx2:
            tx2.execute("INSERT INTO t VALUES (7)")
            raise RuntimeError("boom")
    assert tx2.finished
    assert client.execute_fetchone("SELECT count(*) FROM t") == (5,)
    t3 = client.begin_exclusive()
    assert t3.token != tx.token
    t3.rollback()
    with pytest.raises(core.ProgrammingError, match="already finished"):
        t3.commit()
    # The seed's TransactionError, and still sqlite3's ProgrammingError.
    with pytest.raises(core.TransactionError, match="already finished") as raised:
        t3.execute("INSERT INTO t VALUES (8)")
    assert isinstance(raised.value, sqlite3.ProgrammingError)
    assert not isinstance(raised.value, core.TransactionCommandError)
    assert raised.value.sqlite_errorcode == sqlite3.SQLITE_MISUSE


def test_transaction_commands_out_of_place_raise_transaction_command_error(client):
    client.executescript("CREATE TABLE t (x)")
    for sql in ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "END", "ROLLBACK", "SAVEPOINT s"]:
        with pytest.raises(core.TransactionCommandError, match="begin") as raised:
            client.execute(sql)
        assert isinstance(raised.value, core.TransactionError)
        assert isinstance(raised.value, core.PoolError)
        assert isinstance(raised.value, sqlite3.ProgrammingError)
    with pytest.raises(core.TransactionCommandError):
        client.executescript("INSERT INTO t VALUES (1); COMMIT")
    with pytest.raises(core.TransactionCommandError, match="no open transaction"):
        client.commit()
    with pytest.raises(core.TransactionCommandError, match="no open transaction"):
        client.rollback()
    client.begin()
    with pytest.raises(core.TransactionCommandError, match="already has an open transaction"):
        client.begin()
    # Its BEGIN would wait behind the thread's own transaction (probe41: 5 s, then TimeoutError).
    with pytest.raises(core.TransactionCommandError, match="already has an open transaction"):
        client.begin_exclusive()
    client.rollback()
    # Other misuse stays a plain ProgrammingError.
    with pytest.raises(core.ProgrammingError) as raised:
        client.execute("INSERT INTO t VALUES (1); INSERT INTO t VALUES (2)")
    assert not isinstance(raised.value, core.TransactionError)
    assert client.execute_fetchone("SELECT count(*) FROM t") == (0,)


def test_begin_exclusive_contention_waits(client, server):
    client.executescript("CREATE TABLE t (x)")
    other = core.MultiplexedClient(server.socket_path)
    tx = client.begin_exclusive()
    tx.execute("INSERT INTO t VALUES (1)")
    done = threading.Event()

    def second():
        with other.begin_exclusive() as t:  # waits for the first, does not fail
            t.execute("INSERT INTO t VALUES (2)")
        done.set()

    th = threading.Thread(target=second)
    th.start()
    assert not done.wait(0.3)
    tx.commit()
    th.join(10)
    assert done.is_set()
    assert client.execute_fetchall("SELECT x FROM t ORDER BY x") == [(1,), (2,)]


def test_a_thread_whose_transaction_the_daemon_ended_may_begin_again(client):
    # A probe found the thread stuck: begin() said it had a transaction, in_transaction said no.
    client.executescript("CREATE TABLE u (x UNIQUE); INSERT INTO u VALUES (1)")
    client.begin()
    with pytest.raises(core.OperationalError, match="rolled back"):
        client.execute("INSERT OR ROLLBACK INTO u VALUES (1)")  # SQLite ends the transaction
    assert not client.in_transaction
    with pytest.raises(core.OperationalError):  # never run outside the transaction it was for
        client.execute("INSERT INTO u VALUES (2)")
    client.begin()
    client.execute("INSERT INTO u VALUES (3)")
    client.commit()
    assert client.execute_fetchall("SELECT x FROM u ORDER BY x") == [(1,), (3,)]


def test_closing_the_client_while_a_thread_runs_in_its_transaction_is_safe(client, server):
    # probe41: close() destroyed the thread's transaction under that thread's running call (a
    # use-after-free under valgrind and scripts/python-sanitize.sh). The call fails as on a
    # closed client, and the daemon rolls the transaction back.
    c = core.MultiplexedClient(server.socket_path)
    c.executescript("CREATE TABLE t (x)")
    began, seen = threading.Event(), []

    def worker():
        c.begin()
        began.set()
        for call in (lambda: c.execute(
                "INSERT INTO t SELECT count(*) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                "SELECT i + 1 FROM n WHERE i < 3000000) SELECT i FROM n)"),
                lambda: c.execute("INSERT INTO t VALUES (1)"), c.rollback, c.begin):
            try:
                call()
                seen.append("returned")
            except core.SqliteError as e:
                seen.append(type(e).__name__)

    th = threading.Thread(target=worker)
    th.start()
    assert began.wait(10)
    time.sleep(0.2)  # inside the INSERT (about a second of the daemon's time)
    c.close()
    th.join(30)
    assert not th.is_alive()
    assert seen[0] in ("ConnectionLostError", "ConnectionClosedError"), seen
    assert seen[1:] == ["ConnectionClosedError"] * 3, seen
    for call in (lambda: c.in_transaction, c.commit, c.begin_exclusive):
        with pytest.raises(core.ConnectionClosedError):
            call()
    assert client.execute_fetchall("SELECT count(*) FROM t") == [(0,)]


def test_client_level_transaction_belongs_to_the_calling_thread(client):
    client.executescript("CREATE TABLE t (x)")
    client.begin()
    assert client.in_transaction
    client.execute("INSERT INTO t VALUES (1)")
    finished = threading.Event()
    seen = []

    def other_thread():
        seen.append(client.in_transaction)
        client.execute("INSERT INTO t VALUES (2)")  # waits: not part of the transaction
        finished.set()

    th = threading.Thread(target=other_thread)
    th.start()
    assert not finished.wait(0.3)
    assert client.execute_fetchall("SELECT x FROM t") == [(1,)]
    client.rollback()
    th.join(10)
    assert seen == [False]
    assert client.execute_fetchall("SELECT x FROM t") == [(2,)]
    with pytest.raises(core.ProgrammingError):
        client.commit()
    client.begin()
    client.execute("INSERT INTO t VALUES (3)")
    client.commit()
    assert client.execute_fetchall("SELECT x FROM t ORDER BY x") == [(2,), (3,)]


def test_gil_is_released_while_a_call_blocks(client, server):
    client.executescript("CREATE TABLE t (x)")
    tx = client.begin_exclusive()
    other = core.MultiplexedClient(server.socket_path)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.005)

    writer = threading.Thread(target=lambda: other.execute("INSERT INTO t VALUES (1)"))
    writer.start()  # blocks in the daemon's queue behind tx
    time.sleep(0.05)
    t = threading.Thread(target=ticker)
    t.start()
    time.sleep(0.3)
    before = len(ticks)
    assert before > 10  # the ticker ran while the write blocked
    stop.set()
    t.join()
    tx.commit()
    writer.join(10)
    conn = core.Connection.memory()
    ticks.clear()
    stop.clear()
    t = threading.Thread(target=ticker)
    t.start()
    conn.execute_fetchone("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                          "WHERE i < 3000000) SELECT count(*) FROM n")
    stop.set()
    t.join()
    assert len(ticks) > 1  # a long SQLite step let the ticker run


def test_utilities():
    assert core.sqlite_version() == sqlite3.sqlite_version
    assert core.sqlite_version_number() > 3_000_000
    assert isinstance(core.sqlite_threadsafe(), bool)
    assert core.memory_used() >= 0
    assert core.memory_highwater() >= core.memory_used() or core.memory_highwater(True) >= 0
    assert isinstance(core.memory_highwater(reset=True), int)


def test_fork_in_a_child(client, db_path):
    client.executescript("CREATE TABLE t (x)")
    pid = os.fork()
    if pid == 0:  # the child: its own client on the same writer
        code = 1
        try:
            c = core.MultiplexedClient(client.socket_path)
            c.execute("INSERT INTO t VALUES (42)")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert client.execute_fetchall("SELECT x FROM t") == [(42,)]


def test_fork_child_uses_the_inherited_client(client):
    client.executescript("CREATE TABLE t (x)")
    client.execute("INSERT INTO t VALUES (0)")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(10)  # a client that hangs in the child must not hang the suite
            client.execute("INSERT INTO t VALUES (1)")
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert client.execute_fetchall("SELECT x FROM t ORDER BY x") == [(0,), (1,)]


def test_a_connection_and_its_cursor_may_be_shared_by_threads(tmpdir_path):
    # Two threads sharing one Connection crashed the interpreter (probe15, probe17): the C++
    # connection is one thread at a time, and every call releases the GIL. Calls now take turns.
    conn = core.connect(os.path.join(tmpdir_path, "shared.db"))
    conn.executescript("CREATE TABLE t (x); " + " ".join(
        "INSERT INTO t VALUES (%d);" % i for i in range(100)))
    cursor = conn.cursor("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                         "WHERE i < 20000) SELECT i FROM n")
    errors, fetched = [], []

    def reader(k):
        try:
            for i in range(300):
                assert conn.execute_fetchall("SELECT x FROM t WHERE x < ?", [(i + k) % 100]) \
                    == [(x,) for x in range((i + k) % 100)]
                fetched.extend(cursor.fetchmany(10))
        except BaseException as e:  # noqa: B902
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert errors == []
    assert sorted(v for (v,) in fetched) == list(range(1, 12001))  # every row once
    conn.close()


def test_closing_a_connection_while_another_thread_reads_is_safe(tmpdir_path):
    conn = core.connect(os.path.join(tmpdir_path, "close.db"))
    outcome = []

    def long_read():
        try:
            conn.execute_fetchone("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                  "WHERE i < 3000000) SELECT count(*) FROM n")
            outcome.append("done")
        except core.ConnectionClosedError:
            outcome.append("closed")

    th = threading.Thread(target=long_read)
    th.start()
    time.sleep(0.05)
    conn.close()  # waits for the read in progress, then closes
    th.join(60)
    assert outcome in (["done"], ["closed"])
    with pytest.raises(core.ConnectionClosedError):
        conn.execute_fetchone("SELECT 1")


def test_text_that_is_not_utf8_raises_as_sqlite3_does(client, db_path):
    # It came back with U+FFFD in place of the bytes, which writing it back would store.
    client.executescript("CREATE TABLE t (v TEXT); INSERT INTO t VALUES (CAST(X'FF41' AS TEXT))")
    with pytest.raises(sqlite3.OperationalError, match="UTF-8"):
        client.execute_fetchall("SELECT v FROM t")
    reader = core.connect(db_path, core.OpenFlags.readonly())
    with pytest.raises(sqlite3.OperationalError, match="UTF-8"):
        reader.execute_fetchone("SELECT v FROM t")
    assert reader.execute_fetchone("SELECT CAST(v AS BLOB) FROM t") == (b"\xffA",)
    reader.close()


def test_a_transaction_the_daemon_ended_says_why_on_every_call_and_at_the_blocks_end(
        tmpdir_path):
    with core.start_writer_server(os.path.join(tmpdir_path, "e.db"),
                                  transaction_idle_timeout=0.5) as server:
        c = core.MultiplexedClient(server.socket_path)
        c.executescript("CREATE TABLE t (x)")
        tx = c.begin_exclusive()
        time.sleep(1.5)  # idle past the timeout: rolled back
        for _ in range(2):  # the cause each time, not "already finished" as if committed
            with pytest.raises(core.OperationalError, match="idle"):
                tx.execute("INSERT INTO t VALUES (1)")
        # A block that caught the error would end as if committed: its end raises the cause.
        with pytest.raises(core.OperationalError, match="idle"):
            with c.begin_exclusive() as tx2:
                time.sleep(1.5)
                try:
                    tx2.execute("INSERT INTO t VALUES (2)")
                except core.OperationalError:
                    pass
        with c.begin_exclusive() as tx3:  # committed or rolled back in the block: nothing to say
            tx3.execute("INSERT INTO t VALUES (3)")
            tx3.commit()
        assert c.execute_fetchall("SELECT x FROM t") == [(3,)]
        c.close()


def test_other_errors_of_the_library_are_sqlite3_errors(tmpdir_path, server):
    # A server refused for its socket raised a bare SqliteError, which `except sqlite3.Error`
    # missed.
    with pytest.raises(sqlite3.Error):
        core.start_writer_server(os.path.join(tmpdir_path, "other.db"), server.socket_path)


def test_dropping_a_cursor_while_another_thread_reads_lets_go_of_the_gil(tmpdir_path):
    # The cursor's finalizer waited for the connection holding the GIL: the reading thread's
    # watchdog (which needs the GIL to interrupt it) never ran, and everything froze (review).
    conn = core.connect(os.path.join(tmpdir_path, "gil.db"))
    cur = conn.cursor("SELECT 1")
    outcome = []

    def endless():
        try:
            conn.execute_fetchone("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
                                  "SELECT count(*) FROM n")
        except core.OperationalError as e:
            outcome.append(e.sqlite_errorcode)

    reader = threading.Thread(target=endless)
    reader.start()
    time.sleep(0.2)
    watchdog = threading.Timer(0.5, conn.interrupt)
    watchdog.start()
    started = time.monotonic()
    del cur  # waits for the read, without the GIL: the watchdog runs and interrupts it
    assert time.monotonic() - started < 10
    reader.join(10)
    watchdog.join()
    assert outcome == [9]  # SQLITE_INTERRUPT
    conn.close()


def test_a_connection_busy_in_another_thread_at_fork_refuses_in_the_child(tmpdir_path):
    # The child's copy of the connection's lock was held for good by the thread in the call:
    # every call in the child hung (review). It raises ProgrammingError, as without threads.
    conn = core.connect(os.path.join(tmpdir_path, "fork.db"))
    cur = conn.cursor("SELECT 1")
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            conn.execute_fetchone("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                                  "WHERE i < 20000) SELECT count(*) FROM n")

    th = threading.Thread(target=busy)
    th.start()
    time.sleep(0.1)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(10)
            for call in (lambda: conn.execute_fetchone("SELECT 1"), cur.fetchone):
                try:
                    call()
                    os._exit(2)
                except core.ProgrammingError as e:
                    if "fork" not in str(e):
                        os._exit(3)
            del cur
            conn.close()
            assert conn.closed
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    stop.set()
    th.join(10)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert conn.execute_fetchone("SELECT 2") == (2,)
    conn.close()


def test_a_with_block_whose_own_rollback_failed_ends_quietly(tmpdir_path):
    with core.start_writer_server(os.path.join(tmpdir_path, "w.db")) as server:
        c = core.MultiplexedClient(server.socket_path)
        c.executescript("CREATE TABLE t (x)")
        with c.begin_exclusive() as tx:
            tx.execute("INSERT INTO t VALUES (1)")
            c.close()  # the block's own rollback then fails: it knows, and catches it
            try:
                tx.rollback()
            except (core.ConnectionClosedError, core.ConnectionLostError):
                pass
        assert tx.finished
