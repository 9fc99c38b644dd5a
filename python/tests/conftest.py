import os
import tempfile

import pytest

import pasyn_sqlite_core as core


@pytest.fixture
def tmpdir_path():
    with tempfile.TemporaryDirectory(prefix="pasyn-py-") as d:
        yield d


@pytest.fixture
def db_path(tmpdir_path):
    return os.path.join(tmpdir_path, "test.sqlite")


@pytest.fixture
def server(db_path):
    with core.start_writer_server(db_path) as handle:
        yield handle


@pytest.fixture
def client(server):
    c = core.MultiplexedClient(server.socket_path)
    yield c
    c.close()
