from sqlite3 import (
    DatabaseError as DatabaseError,
    DataError as DataError,
    Error as Error,
    IntegrityError as IntegrityError,
    InterfaceError as InterfaceError,
    InternalError as InternalError,
    NotSupportedError as NotSupportedError,
    OperationalError as OperationalError,
    ProgrammingError as ProgrammingError,
    Warning as Warning,
)
import os
from typing import Any, List, Optional, Union

from pasyn_sqlite_core import (
    Connection,
    ConnectionClosedError as ConnectionClosedError,
    OpenFlags,
    Params,
    PoolClosedError as PoolClosedError,
    PoolError as PoolError,
    Row,
    SqliteError as SqliteError,
    TransactionCommandError as TransactionCommandError,
    TransactionError as TransactionError,
)

__version__: str

class ReadPool:
    def __init__(
        self, path: Union[str, os.PathLike[str]], size: int = 4, flags: Optional[OpenFlags] = None
    ) -> None: ...
    def acquire(self, timeout: Optional[float] = None) -> Connection: ...
    def connection(self, timeout: Optional[float] = None) -> Connection: ...
    def execute_fetchall(self, sql: str, params: Params = None) -> List[Row]: ...
    def execute_fetchone(self, sql: str, params: Params = None) -> Optional[Row]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def size(self) -> int: ...
    def __enter__(self) -> ReadPool: ...
    def __exit__(self, *exc: Any) -> bool: ...
