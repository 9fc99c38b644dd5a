"""pasyn_sqlite.aio without a thread pool: transactions, scripts and pings complete through the
C++ side like writes do."""
import asyncio

import pytest

import pasyn_sqlite_core as core
from pasyn_sqlite import aio


def run_without_executor(coroutine_function):
    """Runs it on a loop whose executor refuses to be used: any run_in_executor fails."""

    async def main():
        loop = asyncio.get_running_loop()

        def refuse(*args, **kwargs):
            raise AssertionError("pasyn_sqlite.aio used a thread pool (run_in_executor)")

        loop.run_in_executor = refuse
        loop.set_default_executor = refuse
        result = await coroutine_function()
        assert getattr(loop, "_default_executor", None) is None
        return result

    return asyncio.run(main())


def test_aio_never_uses_a_thread_pool(server):
    async def main():
        client = aio.connect(server.socket_path)
        assert await client.ping() is True
        assert await client.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, x)") is None
        async with client.transaction() as tx:
            assert tx.token > 0
            assert await tx.execute("INSERT INTO t (x) VALUES (?)", [1]) == 1
            assert await tx.execute_returning_rowid("INSERT INTO t (x) VALUES (:x)", {"x": 2}) == 2
            assert await tx.execute_many("INSERT INTO t (x) VALUES (?)", [[3], [4]]) == 2
            await tx.executescript("INSERT INTO t (x) VALUES (5); INSERT INTO t (x) VALUES (6)")
            assert await tx.execute_fetchone("SELECT count(*) FROM t") == (6,)
        assert tx.finished
        with pytest.raises(RuntimeError):
            async with client.transaction() as tx2:
                await tx2.execute("INSERT INTO t (x) VALUES (7)")
                raise RuntimeError("boom")
        assert tx2.finished
        async with client.transaction() as tx3:
            await tx3.execute("INSERT INTO t (x) VALUES (8)")
            await tx3.rollback()
        with pytest.raises(core.ProgrammingError, match="already finished"):
            await tx3.execute("INSERT INTO t (x) VALUES (9)")
        assert await client.execute_fetchall("SELECT x FROM t ORDER BY id") == [
            (1,), (2,), (3,), (4,), (5,), (6,)]
        with pytest.raises(core.IntegrityError):
            async with client.transaction() as tx4:
                await tx4.execute("INSERT INTO t (id, x) VALUES (1, 'dup')")
        client.close()

    run_without_executor(main)


def test_aio_transaction_replies_do_not_wait_behind_the_writes_it_holds_back(db_path):
    # A write sent while the task's own transaction is open waits in the daemon until the
    # transaction ends; the transaction's replies must not queue behind it.
    with core.start_writer_server(db_path, lock_wait=120.0) as server:
        async def main():
            client = aio.connect(server.socket_path)
            await client.executescript("CREATE TABLE t (x)")
            async with client.transaction() as tx:
                held = client.execute("INSERT INTO t VALUES ('after')")
                await asyncio.wait_for(tx.execute("INSERT INTO t VALUES ('inside')"), 60)
                assert await asyncio.wait_for(tx.execute_fetchall("SELECT x FROM t"), 60) == [
                    ("inside",)]
            assert await held == 1
            assert await client.execute_fetchall("SELECT x FROM t ORDER BY rowid") == [
                ("inside",), ("after",)]
            client.close()

        run_without_executor(main)


def test_aio_cancelled_or_orphaned_begin_leaves_no_transaction_open(db_path):
    # An abandoned transaction would hold every later write back until --lock-wait runs out.
    with core.start_writer_server(db_path, lock_wait=3.0,
                                  transaction_idle_timeout=600.0) as server:
        holder = core.MultiplexedClient(server.socket_path)
        other = core.MultiplexedClient(server.socket_path)
        holder.executescript("CREATE TABLE t (x)")
        client = aio.connect(server.socket_path)

        async def cancelled_begin():
            held = holder.begin_exclusive()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.transaction().__aenter__(), 0.2)
            held.commit()  # now the daemon grants the abandoned BEGIN
            assert await client.ping()

        asyncio.run(cancelled_begin())
        assert other.execute("INSERT INTO t VALUES (1)") == 1

        # The loop closes before the grant arrives: it is dropped, and so rolled back.
        held = holder.begin_exclusive()
        loop = asyncio.new_event_loop()

        async def begin():
            task = asyncio.ensure_future(client.transaction().__aenter__())
            await asyncio.sleep(0)  # the task sends its BEGIN
            return task

        pending = loop.run_until_complete(begin())
        loop.close()
        held.commit()
        client.client.ping()
        assert other.execute("INSERT INTO t VALUES (2)") == 1
        assert not pending.done()
        assert other.execute_fetchall("SELECT x FROM t ORDER BY x") == [(1,), (2,)]
        client.close()
        holder.close()
        other.close()


def test_aio_close_fails_the_waiting_awaits_with_connection_lost(db_path):
    """close() does not wait for the replies of awaits still pending: their requests were sent,
    so they fail with ConnectionLostError (outcome unknown), as the synchronous client's do."""
    with core.start_writer_server(db_path, lock_wait=60.0) as server:
        holder = core.MultiplexedClient(server.socket_path)
        holder.executescript("CREATE TABLE t (x)")
        tx = holder.begin_exclusive()  # the write below waits behind it, up to lock_wait

        async def main():
            client = aio.connect(server.socket_path)
            pending = asyncio.ensure_future(client.execute("INSERT INTO t VALUES (1)"))
            await asyncio.sleep(0.2)  # sent, and waiting in the daemon
            assert not pending.done()
            client.close()  # before the change: blocked until the holder's transaction ended
            with pytest.raises(core.ConnectionLostError, match="outcome unknown"):
                await pending

        asyncio.run(main())
        tx.rollback()
        holder.close()


def test_aio_client_dropped_with_writes_waiting_does_not_block_the_loop(db_path):
    """Dropping the last reference to an aio client closes it: its waiting awaits fail with
    ConnectionLostError at once. Before, the drop joined the completion thread, which waited
    for the replies: the loop froze for as long as the daemon held them back (probe21)."""
    import gc
    import threading

    with core.start_writer_server(db_path, lock_wait=60.0,
                                  transaction_idle_timeout=600.0) as server:
        holder = core.MultiplexedClient(server.socket_path)
        holder.executescript("CREATE TABLE t (x)")
        tx = holder.begin_exclusive()  # the writes below wait behind it, up to lock_wait
        # Ends the wait if the drop blocks (the test then fails instead of hanging).
        rolled_back = threading.Event()
        release = threading.Timer(30.0, lambda: (tx.rollback(), rolled_back.set()))
        release.start()

        async def main():
            client = aio.connect(server.socket_path)
            await client.ping()
            pending = [asyncio.ensure_future(client.execute("INSERT INTO t VALUES (1)"))
                       for _ in range(3)]
            await asyncio.sleep(0.2)  # sent, and waiting in the daemon
            assert not any(p.done() for p in pending)
            del client
            gc.collect()
            assert not rolled_back.is_set(), "the drop waited for the holder's rollback"
            for p in pending:
                with pytest.raises(core.ConnectionLostError):
                    await p

        asyncio.run(main())
        release.cancel()
        release.join()
        if not rolled_back.is_set():
            tx.rollback()
        # The daemon runs what it read: the dropped client's writes are unknown, not lost.
        assert holder.execute("INSERT INTO t VALUES (2)") == 1
        assert holder.execute_fetchall("SELECT count(*) FROM t WHERE x = 1")[0][0] <= 3
        holder.close()


def test_aio_client_used_before_fork_completes_its_calls_in_the_child(server):
    # The child had the parent's completion thread object but not its thread: its awaits never
    # completed, though the writes committed (probe17).
    import os
    import signal

    client = aio.connect(server.socket_path)

    async def create():
        await client.executescript("CREATE TABLE t (x)")

    asyncio.run(create())
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            signal.alarm(20)

            async def child():
                await asyncio.wait_for(client.execute("INSERT INTO t VALUES (1)"), 10)
                async with client.transaction() as tx:
                    await asyncio.wait_for(tx.execute("INSERT INTO t VALUES (2)"), 10)

            asyncio.run(child())
            code = 0
        except BaseException:  # noqa: B902
            pass
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0

    async def rows():
        return await client.execute_fetchall("SELECT x FROM t ORDER BY x")

    assert asyncio.run(rows()) == [(1,), (2,)]
    client.close()
