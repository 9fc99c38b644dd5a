"""Per-call `timeout=` on MultiplexedClient and Transaction calls (pasyn::Timeout underneath)."""
import math
import os
import threading
import time

import pytest

import pasyn_sqlite_core as core

# The client's own TimeoutError, not the daemon's lock wait (also a TimeoutError).
CLIENT_TIMEOUT = "no reply"


@pytest.fixture
def patient_server(tmpdir_path):
    # Daemon waits far longer than any call here: a TimeoutError can only be the client's.
    with core.start_writer_server(os.path.join(tmpdir_path, "t.db"), lock_wait=60,
                                  transaction_idle_timeout=60) as server:
        setup = core.MultiplexedClient(server.socket_path)
        setup.executescript("CREATE TABLE kv (k TEXT)")
        setup.close()
        yield server


def count(server, key):
    c = core.MultiplexedClient(server.socket_path)
    try:
        return c.execute_fetchone("SELECT count(*) FROM kv WHERE k = ?", [key])[0]
    finally:
        c.close()


def test_each_call_times_out_by_its_own_bound_while_the_client_has_none(patient_server):
    holder = core.MultiplexedClient(patient_server.socket_path)
    tx = holder.begin_exclusive()
    client = core.MultiplexedClient(patient_server.socket_path)  # no client-wide timeout
    calls = [
        lambda: client.execute("INSERT INTO kv VALUES ('late')", timeout=0.2),
        lambda: client.execute("INSERT INTO kv VALUES (:k)", {"k": "late"}, timeout=0.2),
        lambda: client.execute_returning_rowid("INSERT INTO kv VALUES (?)", ["late"],
                                               timeout=0.2),
        lambda: client.execute_many("INSERT INTO kv VALUES (?)", [["late"]], timeout=0.2),
        lambda: client.execute_many("INSERT INTO kv VALUES (:k)", [{"k": "late"}], timeout=0.2),
        lambda: client.executescript("INSERT INTO kv VALUES ('late')", timeout=0.2),
        lambda: client.execute_fetchall("INSERT INTO kv VALUES ('late') RETURNING k",
                                        timeout=0.2),
        lambda: client.execute_fetchone("INSERT INTO kv VALUES (:k) RETURNING k", {"k": "late"},
                                        timeout=0.2),
    ]
    for call in calls:
        with pytest.raises(core.TimeoutError) as info:
            call()
        assert isinstance(info.value, TimeoutError)  # Python's own, too
        assert CLIENT_TIMEOUT in str(info.value) and "200 ms" in str(info.value)
    # A bound below a millisecond is one millisecond, never "no bound".
    with pytest.raises(core.TimeoutError) as info:
        client.execute("INSERT INTO kv VALUES ('late')", timeout=1e-6)
    assert "within 1 ms" in str(info.value)
    tx.commit()
    # Each write that timed out may still commit, and is never re-sent: each did, once, before
    # this later write of the same connection.
    client.execute("INSERT INTO kv VALUES ('after')")
    assert count(patient_server, "late") == len(calls) + 1


def test_a_longer_timeout_than_the_clients_wins_and_zero_means_no_bound(patient_server):
    holder = core.MultiplexedClient(patient_server.socket_path)
    tx = holder.begin_exclusive()
    client = core.MultiplexedClient(patient_server.socket_path, timeout=0.2)
    with pytest.raises(core.TimeoutError):  # without timeout=: the client's, as before
        client.execute("INSERT INTO kv VALUES ('default')")
    results = {}

    def write(key, timeout):
        results[key] = client.execute("INSERT INTO kv VALUES (?)", [key], timeout=timeout)

    threads = [threading.Thread(target=write, args=("patient", 30.0)),
               threading.Thread(target=write, args=("unbounded", 0)),
               threading.Thread(target=write, args=("infinite", math.inf))]
    for t in threads:
        t.start()
    time.sleep(1.0)  # five times the client's timeout: they would all have given up
    tx.commit()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    assert results == {"patient": 1, "unbounded": 1, "infinite": 1}


def test_begin_exclusive_times_out_and_the_late_grant_is_rolled_back(patient_server):
    holder = core.MultiplexedClient(patient_server.socket_path)
    tx = holder.begin_exclusive()
    client = core.MultiplexedClient(patient_server.socket_path)
    with pytest.raises(core.TimeoutError) as info:
        client.begin_exclusive(timeout=0.2)
    assert "BEGIN" in str(info.value)
    tx.commit()
    # Not held up for the 60 s idle timeout by the abandoned BEGIN.
    other = core.MultiplexedClient(patient_server.socket_path, timeout=30)
    assert other.execute("INSERT INTO kv VALUES ('other')") == 1


def test_transaction_and_thread_transaction_calls_take_a_timeout(patient_server):
    client = core.MultiplexedClient(patient_server.socket_path)
    with client.begin_exclusive(timeout=30) as tx:
        assert tx.execute("INSERT INTO kv VALUES ('tx')", timeout=30) == 1
        assert tx.execute_returning_rowid("INSERT INTO kv VALUES (:k)", {"k": "tx"},
                                          timeout=30) > 0
        assert tx.execute_many("INSERT INTO kv VALUES (?)", [["tx"]], timeout=30) == 1
        tx.executescript("INSERT INTO kv VALUES ('tx')", timeout=30)
        assert tx.execute_fetchall("SELECT count(*) FROM kv", timeout=30) == [(4,)]
        assert tx.execute_fetchone("SELECT k FROM kv LIMIT 1", timeout=30) == ("tx",)
    tx2 = client.begin_exclusive()
    tx2.execute("INSERT INTO kv VALUES ('rolled back')")
    tx2.rollback(timeout=30)
    client.begin(timeout=30)
    assert client.in_transaction
    client.execute("INSERT INTO kv VALUES ('thread')", timeout=30)
    client.commit(timeout=30)
    client.begin(timeout=30)
    client.execute("INSERT INTO kv VALUES ('rolled back')", timeout=30)
    client.rollback(timeout=30)
    assert client.ping(timeout=30)
    assert count(patient_server, "tx") == 4
    assert count(patient_server, "thread") == 1
    assert count(patient_server, "rolled back") == 0


def test_bad_timeouts_are_value_errors_and_the_keyword_is_keyword_only(client):
    client.executescript("CREATE TABLE t (x)")
    for bad in (-1, -0.001, math.nan):
        with pytest.raises(ValueError):
            client.execute("INSERT INTO t VALUES (1)", timeout=bad)
    with pytest.raises(TypeError):
        client.execute("INSERT INTO t VALUES (?)", [1], 5.0)
    assert client.execute("INSERT INTO t VALUES (1)", timeout=None) == 1
    assert client.execute_fetchone("SELECT count(*) FROM t", timeout=5) == (1,)


def test_duration_options_take_infinity_as_forever_and_refuse_nan(tmpdir_path):
    # A huge value once overflowed the conversion to milliseconds; now it is ten years, forever
    # for every duration option.
    path = os.path.join(tmpdir_path, "inf.db")
    with core.start_writer_server(path, lock_wait=math.inf, transaction_idle_timeout=1e300,
                                  busy_timeout=math.inf) as server:
        c = core.MultiplexedClient(server.socket_path, timeout=math.inf)
        c.executescript("CREATE TABLE t (x)")
        assert c.execute("INSERT INTO t VALUES (1)") == 1
        c.close()
    for bad in (math.nan, -1.0):
        with pytest.raises(ValueError):
            core.start_writer_server(path, lock_wait=bad)
