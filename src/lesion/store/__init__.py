"""Run directories: the SQLite results database (write side) and `Run` (read side)."""

from lesion.store._db import DB_NAME, FORMAT, RunDB
from lesion.store._run import EXPORT_FORMATS, Run

__all__ = ["DB_NAME", "EXPORT_FORMATS", "FORMAT", "Run", "RunDB"]
