"""pasyn_sqlite: version, exception names, ``ReadPool`` and ``pasyn_sqlite.aio``.

sqlite3's exception classes are re-exported as they are; pasyn's own (``PoolError`` ...)
are the classes ``pasyn_sqlite_core`` raises.
"""

from sqlite3 import (  # noqa: F401  (re-exported)
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    Warning,
)

import pasyn_sqlite_core as _core
from pasyn_sqlite_core import (  # noqa: F401
    ConnectionClosedError,
    PoolClosedError,
    PoolError,
    SqliteError,
    TransactionCommandError,
    TransactionError,
)

__version__ = "0.1.0"


class ReadPool:
    """Read-only connections for many reader threads: ``ReadPool(path, size)``.

    ``with pool.connection() as conn:`` (or ``conn = pool.acquire()`` ... ``conn.close()``)
    lends a connection; ``execute_fetchall``/``execute_fetchone`` borrow one for one query.
    After ``close()`` every call raises ``PoolClosedError``. Thread-safe; the GIL is released
    while a thread waits for a connection. ``timeout``: ``None`` waits as long as it takes
    (Ctrl-C interrupts it), ``0`` does not wait, else seconds; ``PoolError`` when it runs out."""

    def __init__(self, path, size=4, flags=None):
        self._pool = _core.ReadPool(path, size, flags)

    def acquire(self, timeout=None):
        return self._pool.acquire(timeout)

    def connection(self, timeout=None):
        return self._pool.acquire(timeout)  # a Connection is its own context manager

    def execute_fetchall(self, sql, params=None):
        with self._pool.acquire() as conn:
            return conn.execute_fetchall(sql, params)

    def execute_fetchone(self, sql, params=None):
        with self._pool.acquire() as conn:
            return conn.execute_fetchone(sql, params)

    def close(self):
        self._pool.close()

    @property
    def closed(self):
        return self._pool.closed

    @property
    def size(self):
        return self._pool.size

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


__all__ = [
    "__version__", "Error", "Warning", "DatabaseError", "DataError", "IntegrityError",
    "InterfaceError", "InternalError", "NotSupportedError", "OperationalError",
    "ProgrammingError", "PoolError", "PoolClosedError", "ConnectionClosedError",
    "TransactionError", "TransactionCommandError", "SqliteError", "ReadPool",
]
