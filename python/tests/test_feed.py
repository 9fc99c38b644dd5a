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


def test_resume_in_the_feeds_own_epoch_continues_without_loss_or_reset(table):
    client = table
    feed = client.subscribe(["t"])
    epoch = feed.epoch
    for v in (1, 2, 3):
        client.execute("INSERT INTO t (v) VALUES (?)", [v])
    first = feed.next(5)
    assert first is not None and first.kind == "insert"
    feed.close()  # saved (epoch, first.commit_seq); the two other commits are not seen yet
    client.execute("INSERT INTO t (v) VALUES (4)")
    with client.subscribe(["t"], after_seq=first.commit_seq, epoch=epoch) as resumed:
        got = [resumed.next(5) for _ in range(3)]
        assert [c.kind for c in got] == ["insert", "insert", "insert"]
        assert [c.commit_seq for c in got] == [first.commit_seq + i for i in (1, 2, 3)]
        assert resumed.next(0.3) is None
        assert resumed.epoch == epoch


def test_resume_in_another_epoch_starts_with_a_reset(table):
    client = table
    feed = client.subscribe()
    epoch, last = feed.epoch, feed.last_seq
    feed.close()
    other = 2 if epoch == 1 else 1  # not this daemon run's epoch (0 would mean the current)
    # After commit 1000 of another run: no ProgrammingError (that run may have had it).
    with client.subscribe(["t"], after_seq=last + 1000, epoch=other) as resumed:
        reset = resumed.next(5)
        assert reset is not None and reset.kind == "reset"
        assert reset.commit_seq == last and reset.table == "" and reset.rowid == 0
        assert resumed.epoch == epoch
        client.execute("INSERT INTO t (v) VALUES (1)")
        change = resumed.next(5)
        assert change is not None and change.kind == "insert" and change.commit_seq == last + 1


def test_an_epoch_without_after_seq_is_a_value_error(table):
    with pytest.raises(ValueError, match="epoch needs after_seq"):
        table.subscribe(epoch=1)


def test_the_async_client_resumes_in_an_epoch(server, table):
    client = table
    with client.subscribe() as feed:
        epoch, last = feed.epoch, feed.last_seq
    client.execute("INSERT INTO t (v) VALUES (1)")

    async def main():
        async with aio.AsyncClient(server.socket_path) as aclient:
            async with await aclient.subscribe(after_seq=last, epoch=epoch) as feed:
                change = await feed.next(5)
                assert change is not None and change.kind == "insert"
                assert change.commit_seq == last + 1

    asyncio.run(asyncio.wait_for(main(), 30))
