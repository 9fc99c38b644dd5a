"""The change feed from Python: MultiplexedClient.subscribe() as an iterator and with next(),
and AsyncClient.subscribe() as an async iterator (PROTOCOL.md section 8)."""

import asyncio

import pytest

import pasyn_sqlite_core as core
from pasyn_sqlite import aio


@pytest.fixture
def table(client):
    client.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v UNIQUE)")
    return client


def test_changes_come_in_commit_order_and_failed_writes_never(table):
    client = table
    with client.subscribe() as feed:
        assert feed.epoch != 0
        start = feed.last_seq
        client.execute("INSERT INTO t (v) VALUES (1)")
        with pytest.raises(core.IntegrityError):
            client.execute("INSERT INTO t (v) VALUES (2), (1)")  # inserts 2, then fails
        client.execute("UPDATE t SET v = 3 WHERE v = 1")
        client.execute("DELETE FROM t WHERE v = 3")  # (DELETE without WHERE: not reported)
        got = [next(feed) for _ in range(3)]
        assert [c.kind for c in got] == ["insert", "update", "delete"]
        assert [c.table for c in got] == ["t", "t", "t"]
        assert [c.commit_seq for c in got] == [start + 1, start + 2, start + 3]
        assert got[0].rowid == got[1].rowid == got[2].rowid
        assert feed.next(0.3) is None
        assert "kind='insert'" in repr(got[0])
    with pytest.raises(core.ConnectionClosedError):
        feed.next(0.01)


def test_table_filter_and_resume_after_a_sequence_number(table):
    client = table
    client.execute("CREATE TABLE other (x)")
    first = client.subscribe().last_seq
    client.execute("INSERT INTO other VALUES (1)")
    client.execute("INSERT INTO t (v) VALUES (1)")
    feed = client.subscribe(["T"], after_seq=first)
    change = feed.next(5)
    assert change is not None and change.table == "t" and change.commit_seq == first + 2
    assert feed.next(0.3) is None
    with pytest.raises(core.ProgrammingError):
        client.subscribe(after_seq=first + 100)


def test_the_async_iterator_yields_changes(server, table):
    async def main():
        async with aio.AsyncClient(server.socket_path) as client:
            async with await client.subscribe(["t"]) as feed:
                await client.execute("INSERT INTO t (v) VALUES (?)", [5])
                await client.execute("INSERT INTO t (v) VALUES (?)", [6])
                got = []
                async for change in feed:
                    got.append(change)
                    if len(got) == 2:
                        break
                assert [c.kind for c in got] == ["insert", "insert"]
                assert got[1].commit_seq == got[0].commit_seq + 1
                assert await feed.next(0.2) is None

    asyncio.run(asyncio.wait_for(main(), 30))
