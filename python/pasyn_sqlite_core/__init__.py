"""pasyn_sqlite_core: the seed's API (``import pasyn_sqlite_core as sqlite``) on pasyn.

Writes go through ``MultiplexedClient`` to a writer server (``start_writer_server`` in this
process, or ``pasyn-writerd``); reads run directly on ``Connection``. Every blocking call
releases the GIL.
"""

import ast as _ast
import builtins as _builtins
import inspect as _inspect
import os as _os
import re as _re
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


class ConnectionClosedError(PoolError, ProgrammingError):
    """The connection, client or pool was closed by its owner (or the server is stopping).

    Also ``ProgrammingError`` (so ``SqliteError`` and ``sqlite3.ProgrammingError``, which
    ``sqlite3`` raises for a closed connection)."""


class TransactionError(PoolError, ProgrammingError):
    """A transaction used out of place: a call through one already committed or rolled back.

    Also ``ProgrammingError`` (``sqlite3.ProgrammingError``), with SQLite's code SQLITE_MISUSE."""


class TransactionCommandError(TransactionError):
    """A transaction command out of place: ``begin()`` on a thread that has a transaction open,
    ``commit()`` or ``rollback()`` on one that has none, or ``BEGIN``/``COMMIT``/``ROLLBACK``/
    ``END`` sent as SQL (``SAVEPOINT`` outside a transaction), which the writer refuses."""


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


# SQLite's extended result codes (sqlite3.h, 3.40; the values never change). Python's sqlite3
# module knows only those of the SQLite it was built against.
_EXTENDED = {
    256: "SQLITE_OK_LOAD_PERMANENTLY", 257: "SQLITE_ERROR_MISSING_COLLSEQ",
    261: "SQLITE_BUSY_RECOVERY", 262: "SQLITE_LOCKED_SHAREDCACHE",
    264: "SQLITE_READONLY_RECOVERY", 266: "SQLITE_IOERR_READ", 267: "SQLITE_CORRUPT_VTAB",
    270: "SQLITE_CANTOPEN_NOTEMPDIR", 275: "SQLITE_CONSTRAINT_CHECK", 279: "SQLITE_AUTH_USER",
    283: "SQLITE_NOTICE_RECOVER_WAL", 284: "SQLITE_WARNING_AUTOINDEX", 512: "SQLITE_OK_SYMLINK",
    513: "SQLITE_ERROR_RETRY", 516: "SQLITE_ABORT_ROLLBACK", 517: "SQLITE_BUSY_SNAPSHOT",
    518: "SQLITE_LOCKED_VTAB", 520: "SQLITE_READONLY_CANTLOCK", 522: "SQLITE_IOERR_SHORT_READ",
    523: "SQLITE_CORRUPT_SEQUENCE", 526: "SQLITE_CANTOPEN_ISDIR",
    531: "SQLITE_CONSTRAINT_COMMITHOOK", 539: "SQLITE_NOTICE_RECOVER_ROLLBACK",
    769: "SQLITE_ERROR_SNAPSHOT", 773: "SQLITE_BUSY_TIMEOUT", 776: "SQLITE_READONLY_ROLLBACK",
    778: "SQLITE_IOERR_WRITE", 779: "SQLITE_CORRUPT_INDEX", 782: "SQLITE_CANTOPEN_FULLPATH",
    787: "SQLITE_CONSTRAINT_FOREIGNKEY", 1032: "SQLITE_READONLY_DBMOVED",
    1034: "SQLITE_IOERR_FSYNC", 1038: "SQLITE_CANTOPEN_CONVPATH",
    1043: "SQLITE_CONSTRAINT_FUNCTION", 1288: "SQLITE_READONLY_CANTINIT",
    1290: "SQLITE_IOERR_DIR_FSYNC", 1294: "SQLITE_CANTOPEN_DIRTYWAL",
    1299: "SQLITE_CONSTRAINT_NOTNULL", 1544: "SQLITE_READONLY_DIRECTORY",
    1546: "SQLITE_IOERR_TRUNCATE", 1550: "SQLITE_CANTOPEN_SYMLINK",
    1555: "SQLITE_CONSTRAINT_PRIMARYKEY", 1802: "SQLITE_IOERR_FSTAT",
    1811: "SQLITE_CONSTRAINT_TRIGGER", 2058: "SQLITE_IOERR_UNLOCK",
    2067: "SQLITE_CONSTRAINT_UNIQUE", 2314: "SQLITE_IOERR_RDLOCK", 2323: "SQLITE_CONSTRAINT_VTAB",
    2570: "SQLITE_IOERR_DELETE", 2579: "SQLITE_CONSTRAINT_ROWID", 2826: "SQLITE_IOERR_BLOCKED",
    2835: "SQLITE_CONSTRAINT_PINNED", 3082: "SQLITE_IOERR_NOMEM",
    3091: "SQLITE_CONSTRAINT_DATATYPE", 3338: "SQLITE_IOERR_ACCESS",
    3594: "SQLITE_IOERR_CHECKRESERVEDLOCK", 3850: "SQLITE_IOERR_LOCK", 4106: "SQLITE_IOERR_CLOSE",
    4362: "SQLITE_IOERR_DIR_CLOSE", 4618: "SQLITE_IOERR_SHMOPEN", 4874: "SQLITE_IOERR_SHMSIZE",
    5130: "SQLITE_IOERR_SHMLOCK", 5386: "SQLITE_IOERR_SHMMAP", 5642: "SQLITE_IOERR_SEEK",
    5898: "SQLITE_IOERR_DELETE_NOENT", 6154: "SQLITE_IOERR_MMAP",
    6410: "SQLITE_IOERR_GETTEMPPATH", 6666: "SQLITE_IOERR_CONVPATH", 6922: "SQLITE_IOERR_VNODE",
    7178: "SQLITE_IOERR_AUTH", 7434: "SQLITE_IOERR_BEGIN_ATOMIC",
    7690: "SQLITE_IOERR_COMMIT_ATOMIC", 7946: "SQLITE_IOERR_ROLLBACK_ATOMIC",
    8202: "SQLITE_IOERR_DATA", 8458: "SQLITE_IOERR_CORRUPTFS",
}


def _error_names():
    names = {i: "SQLITE_" + n for i, n in enumerate(_PRIMARY[:29])}
    names[100], names[101] = "SQLITE_ROW", "SQLITE_DONE"
    names.update(_EXTENDED)
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
    "TransactionError": TransactionError,
    "TransactionCommandError": TransactionCommandError,
}


def _make_error(kind, message, code, extended):
    error = _CLASSES.get(kind, SqliteError)(message)
    if code or extended:
        error.sqlite_errorcode = extended or code
        # The name of that same code; "unknown" for a code SQLite does not define, as sqlite3.
        error.sqlite_errorname = _ERROR_NAMES.get(extended or code, "unknown")
    return error


_core._set_error_factory(_make_error)
# Ctrl-C ends a blocking call on the main thread only (where Python runs signal handlers); in a
# child forked from another thread, that thread is the main one. (After threading's own hook.)
_os.register_at_fork(after_in_child=_core._note_main_thread)

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


# inspect.signature() does not understand nanobind's functions (it raises ValueError; probe30),
# which carry their signature as text in __nb_signature__ instead, and cannot be given a
# __signature__. So each public function and method is published as a thin Python function
# that carries one (built from that text) and calls the binding; a class carries the signature
# of its constructor. The cost is one Python call per call (~0.1 us).
def _signature_of(f):
    """The inspect.Signature of nanobind function `f` (its first overload), or None."""
    try:
        text, _doc, defaults = f.__nb_signature__[0]
        tree = _ast.parse(_re.sub(r"\\(\d+)", r"_pasyn_default_\1", text) + ": pass").body[0]
    except (AttributeError, IndexError, TypeError, ValueError, SyntaxError):
        return None
    P = _inspect.Parameter
    a = tree.args

    def annotation(node):
        return P.empty if node is None else _ast.unparse(node)

    def default(node):
        if node is None:
            return P.empty
        if isinstance(node, _ast.Name) and node.id.startswith("_pasyn_default_"):
            return defaults[int(node.id[len("_pasyn_default_"):])]
        return _ast.literal_eval(node)

    try:
        params = []
        positional = a.posonlyargs + a.args
        firsts = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
        for i, (arg, d) in enumerate(zip(positional, firsts)):
            kind = P.POSITIONAL_ONLY if i < len(a.posonlyargs) else P.POSITIONAL_OR_KEYWORD
            params.append(P(arg.arg, kind, default=default(d), annotation=annotation(arg.annotation)))
        if a.vararg:
            params.append(P(a.vararg.arg, P.VAR_POSITIONAL, annotation=annotation(a.vararg.annotation)))
        for arg, d in zip(a.kwonlyargs, a.kw_defaults):
            params.append(P(arg.arg, P.KEYWORD_ONLY, default=default(d),
                            annotation=annotation(arg.annotation)))
        if a.kwarg:
            params.append(P(a.kwarg.arg, P.VAR_KEYWORD, annotation=annotation(a.kwarg.annotation)))
        return _inspect.Signature(params, return_annotation=annotation(tree.returns))
    except (ValueError, TypeError, IndexError):
        return None


def _with_signature(f, owner=None):
    signature = _signature_of(f)
    if signature is None:
        return f

    def call(*args, **kwargs):
        return f(*args, **kwargs)

    call.__signature__ = signature
    call.__name__ = f.__name__
    call.__qualname__ = f"{owner.__name__}.{f.__name__}" if owner else f.__name__
    call.__doc__ = f.__doc__
    call.__module__ = __name__
    return call


def _publish_signatures():
    function, method = type(_core.connect), type(_core.MultiplexedClient.execute)
    kinds = (function, method)
    for cls in (Connection, Cursor, OpenFlags, MultiplexedClient, Transaction, ChangeFeed,
                WriterServerHandle, ReadPool):
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or type(member) not in kinds:
                continue
            published = _with_signature(member, cls)
            # A static method of the binding is a plain function in the class: so is its stand-in.
            setattr(cls, name, staticmethod(published) if type(member) is function else published)
        init = vars(cls).get("__init__")
        if type(init) in kinds and (signature := _signature_of(init)) is not None:
            params = list(signature.parameters.values())[1:]  # without self
            cls.__signature__ = signature.replace(parameters=params,
                                                  return_annotation=_inspect.Signature.empty)
    names = ("connect", "start_writer_server", "default_socket_path", "sqlite_version",
             "sqlite_version_number", "sqlite_threadsafe", "memory_used", "memory_highwater")
    for name in names:
        globals()[name] = _with_signature(globals()[name])


_publish_signatures()


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
