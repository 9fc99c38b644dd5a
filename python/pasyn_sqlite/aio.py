"""asyncio writes without a thread pool: ``await client.execute(...)``.

Each write is sent at once on the client's shared connection; its reply is handed back by the
C++ side (one completion thread per client, not per call) through
``loop.call_soon_threadsafe``, so one event loop can keep thousands of writes in flight.

A cancelled or timed-out await (``asyncio.wait_for``) only stops waiting: the write was sent
and its outcome is unknown; it is never re-sent. Completions that arrive after the event loop
closed are dropped. Reads stay synchronous on a ``pasyn_sqlite_core.Connection``.

Transactions: ``async with client.transaction() as tx:`` (tasks share one thread, so the
thread-bound ``begin()``/``commit()`` of the synchronous client does not apply to them). They,
``executescript`` and ``ping`` are completed the same way: nothing here runs in a thread pool or
blocks the loop. A transaction whose ``begin`` await was cancelled is rolled back once the
daemon has granted it and the loop runs again (a loop blocked in a synchronous call holds it, and
the write lock, until the call returns).
"""

import asyncio

import pasyn_sqlite_core as _core
from pasyn_sqlite_core import _core as _native


def _settle(outcomes):
    """On the event loop: completes the futures of one batch."""
    for future, value, error in outcomes:
        if future.done():  # cancelled or timed out: the outcome stays unknown
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _deliver(outcomes):
    """Called by the client's completion thread (with the GIL) with a batch of
    ``(future, value, error)``: one wake-up of each event loop per batch, not per reply."""
    by_loop = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop is closed: nobody awaits these any more (a transaction
            pass              # among them is dropped, which rolls it back)


_native._set_completion_hook(_deliver)


def _future():
    """A future of the running loop; the C++ side completes it through _deliver."""
    future = asyncio.get_running_loop().create_future()
    return future, future


class AsyncClient:
    """An asyncio front end of ``MultiplexedClient`` (shares one connection for all tasks)."""

    def __init__(self, socket_path, **options):
        self._client = _core.MultiplexedClient(socket_path, **options)

    @property
    def client(self):
        """The synchronous client underneath."""
        return self._client

    def _future(self):
        return _future()

    def execute(self, sql, params=None):
        future, callback = self._future()
        self._client._execute_async(sql, params, False, callback)
        return future

    def execute_returning_rowid(self, sql, params=None):
        future, callback = self._future()
        self._client._execute_async(sql, params, True, callback)
        return future

    def execute_many(self, sql, params_batch):
        future, callback = self._future()
        self._client._execute_many_async(sql, params_batch, callback)
        return future

    def execute_fetchall(self, sql, params=None):
        future, callback = self._future()
        self._client._execute_fetchall_async(sql, params, callback)
        return future

    async def execute_fetchone(self, sql, params=None):
        rows = await self.execute_fetchall(sql, params)
        return rows[0] if rows else None

    def executescript(self, sql):
        future, callback = self._future()
        self._client._executescript_async(sql, callback)
        return future

    def ping(self):
        future, callback = self._future()
        self._client._ping_async(callback)
        return future

    def transaction(self):
        """``async with client.transaction() as tx:`` commits on normal exit, rolls back when
        the block raises. ``tx``'s methods are coroutines."""
        return _AsyncTransaction(self._client)

    async def subscribe(self, tables=None, *, after_seq=None, epoch=None):
        """The change feed: ``async for change in await client.subscribe():``."""
        loop = asyncio.get_running_loop()
        feed = await loop.run_in_executor(
            None, lambda: self._client.subscribe(tables, after_seq=after_seq, epoch=epoch))
        return AsyncChangeFeed(feed)

    def close(self):
        self._client.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False


class AsyncChangeFeed:
    """An asynchronous iterator over a ``ChangeFeed``: each wait runs on the event loop's
    default executor, one at a time (the feed is used by one thread at a time)."""

    _SLICE = 0.5  # seconds one executor call waits, so that a cancelled task lets go soon

    def __init__(self, feed):
        self._feed = feed

    @property
    def feed(self):
        """The synchronous feed underneath."""
        return self._feed

    def __aiter__(self):
        return self

    async def __anext__(self):
        loop = asyncio.get_running_loop()
        while True:
            change = await loop.run_in_executor(None, self._feed.next, self._SLICE)
            if change is not None:
                return change

    async def next(self, timeout):
        """The next change, or None after ``timeout`` seconds without one."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._feed.next, timeout)

    def close(self):
        self._feed.close()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        return False


class _AsyncTransaction:
    """``async with client.transaction() as tx:`` — an exclusive transaction whose requests, like
    the client's, are completed by the C++ side through the event loop (no thread pool)."""

    def __init__(self, client):
        self._client = client
        self._tx = None

    async def __aenter__(self):
        future, callback = _future()
        # If this await is cancelled, the transaction granted later is dropped unseen, and
        # dropping it rolls it back: none is left open without an owner.
        self._client._begin_async(callback)
        self._tx = await future
        return self

    async def __aexit__(self, exc_type, exc, tb):
        if self._tx.finished:
            # A block that ends normally promised a commit: if the daemon or the connection
            # ended the transaction (and the block caught what said so), raise that cause again
            # (the native commit raises it at once, sending nothing). After the block's own
            # commit or rollback, whatever came of it, there is nothing to say.
            if exc_type is None and not self._tx._ended_by_call:
                self._tx.commit()
            return False
        if exc_type is None:
            await self.commit()
        else:
            try:
                await self.rollback()
            except Exception:  # the block's own exception is the one to see
                pass
        return False

    @property
    def finished(self):
        return self._tx is not None and self._tx.finished

    @property
    def token(self):
        return self._tx.token

    def execute(self, sql, params=None):
        future, callback = _future()
        self._tx._execute_async(sql, params, False, callback)
        return future

    def execute_returning_rowid(self, sql, params=None):
        future, callback = _future()
        self._tx._execute_async(sql, params, True, callback)
        return future

    def execute_many(self, sql, params_batch):
        future, callback = _future()
        self._tx._execute_many_async(sql, params_batch, callback)
        return future

    def execute_fetchall(self, sql, params=None):
        future, callback = _future()
        self._tx._execute_fetchall_async(sql, params, callback)
        return future

    async def execute_fetchone(self, sql, params=None):
        rows = await self.execute_fetchall(sql, params)
        return rows[0] if rows else None

    def executescript(self, sql):
        future, callback = _future()
        self._tx._executescript_async(sql, callback)
        return future

    def commit(self):
        future, callback = _future()
        self._tx._commit_async(callback)
        return future

    def rollback(self):
        future, callback = _future()
        self._tx._rollback_async(callback)
        return future


def connect(socket_path, **options):
    """An ``AsyncClient`` for the writer at ``socket_path``."""
    return AsyncClient(socket_path, **options)


__all__ = ["AsyncClient", "AsyncChangeFeed", "connect"]
