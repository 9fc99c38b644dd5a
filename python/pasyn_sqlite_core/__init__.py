"""pasyn_sqlite_core: the seed's API (``import pasyn_sqlite_core as sqlite``) on pasyn.

Writes go through ``MultiplexedClient`` to a writer server (``start_writer_server`` in this
process, or ``pasyn-writerd``); reads run directly on ``Connection``. Every blocking call
releases the GIL.
"""

import builtins as _builtins
import sqlite3 as _sqlite3

from . import _core


class SqliteError(Exception):
    """Base of the errors SQLite reports. Subclasses are also sqlite3's classes.

    ``sqlite_errorcode`` is SQLite's extended result code, ``sqlite_errorname`` its name
    (the attributes of Python 3.11's sqlite3 exceptions)."""

    sqlite_errorcode = None
    sqlite_errorname = None


class IntegrityError(SqliteError, _sqlite3.IntegrityError):
    pass


class OperationalError(SqliteError, _sqlite3.OperationalError):
    pass


class ProgrammingError(SqliteError, _sqlite3.ProgrammingError):
    pass


class DataError(SqliteError, _sqlite3.DataError):
    pass


class InternalError(SqliteError, _sqlite3.InternalError):
    pass


class NotSupportedError(SqliteError, _sqlite3.NotSupportedError):
    pass


class PoolError(Exception):
    """Base of the pool and connection-state errors (the seed's names)."""


class PoolClosedError(PoolError):
    """The pool has been closed."""


class ConnectionClosedError(PoolError):
    """The connection, client or pool was closed by its owner (or the server is stopping)."""


class TransactionError(PoolError):
    """A transaction could not be used as asked."""


class TransactionCommandError(TransactionError):
    """A transaction command (begin/commit/rollback) was used out of place."""


class ConnectionLostError(OperationalError):
    """The writer could not be reached or the connection dropped: the outcome of the writes in
    flight is unknown (they are never re-sent)."""


class TimeoutError(OperationalError, _builtins.TimeoutError):  # noqa: A001
    """A call, or a wait inside the writer, ran out of time. A write's outcome is unknown."""


class ProtocolError(SqliteError, _sqlite3.InterfaceError):
    """The peer broke the wire protocol."""


_PRIMARY = (
    "OK ERROR INTERNAL PERM ABORT BUSY LOCKED NOMEM READONLY INTERRUPT IOERR CORRUPT NOTFOUND "
    "FULL CANTOPEN PROTOCOL EMPTY SCHEMA TOOBIG CONSTRAINT MISMATCH MISUSE NOLFS AUTH FORMAT "
    "RANGE NOTADB NOTICE WARNING ROW DONE"
).split()


def _error_names():
    names = {i: "SQLITE_" + n for i, n in enumerate(_PRIMARY[:29])}
    names[100], names[101] = "SQLITE_ROW", "SQLITE_DONE"
    prefixes = tuple("SQLITE_" + n + "_" for n in _PRIMARY)
    for name in dir(_sqlite3):
        value = getattr(_sqlite3, name)
        if name.startswith(prefixes) and isinstance(value, int) and value > 255:
            names.setdefault(value, name)
    return names


_ERROR_NAMES = _error_names()
_CLASSES = {
    "SqliteError": SqliteError,
    "IntegrityError": IntegrityError,
    "OperationalError": OperationalError,
    "ProgrammingError": ProgrammingError,
    "DataError": DataError,
    "InternalError": InternalError,
    "NotSupportedError": NotSupportedError,
    "ConnectionClosedError": ConnectionClosedError,
    "ConnectionLostError": ConnectionLostError,
    "TimeoutError": TimeoutError,
    "ProtocolError": ProtocolError,
    "PoolError": PoolError,
    "PoolClosedError": PoolClosedError,
}


def _make_error(kind, message, code, extended):
    error = _CLASSES.get(kind, SqliteError)(message)
    if code or extended:
        error.sqlite_errorcode = extended or code
        error.sqlite_errorname = _ERROR_NAMES.get(extended) or _ERROR_NAMES.get(code & 0xFF)
    return error


_core._set_error_factory(_make_error)

Connection = _core.Connection
Cursor = _core.Cursor
OpenFlags = _core.OpenFlags
MultiplexedClient = _core.MultiplexedClient
Transaction = _core.Transaction
ChangeFeed = _core.ChangeFeed
Change = _core.Change
WriterServerHandle = _core.WriterServerHandle
ReadPool = _core.ReadPool
connect = _core.connect
start_writer_server = _core.start_writer_server
default_socket_path = _core.default_socket_path
sqlite_version = _core.sqlite_version
sqlite_version_number = _core.sqlite_version_number
sqlite_threadsafe = _core.sqlite_threadsafe
memory_used = _core.memory_used
memory_highwater = _core.memory_highwater


def multiplexed_client(socket_path, **options):
    """The same as ``MultiplexedClient(socket_path)``."""
    return MultiplexedClient(socket_path, **options)


__all__ = [
    "Connection", "Cursor", "OpenFlags", "MultiplexedClient", "Transaction", "ChangeFeed",
    "Change",
    "WriterServerHandle", "ReadPool", "connect", "start_writer_server", "default_socket_path",
    "multiplexed_client", "sqlite_version", "sqlite_version_number", "sqlite_threadsafe",
    "memory_used", "memory_highwater", "SqliteError", "IntegrityError", "OperationalError",
    "ProgrammingError", "DataError", "InternalError", "NotSupportedError",
    "ConnectionClosedError", "ConnectionLostError", "TimeoutError", "ProtocolError",
    "PoolError", "PoolClosedError", "TransactionError", "TransactionCommandError",
]
