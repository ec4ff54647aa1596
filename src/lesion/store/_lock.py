"""One writer per directory: a lock file holding the writer's pid, host and start time.

The lock is an ``fcntl.flock`` on ``DIR/.lesion.lock``: the operating system releases it when its
process ends, however it ends, so the lock of a dead process (a SIGKILL, a crash) is simply taken
over; the file's contents only say who holds it. Where ``flock`` is unavailable (not POSIX), the
pid in the file decides: a lock whose process is gone on this host is stale and taken over.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from lesion._errors import LesionError

LOCK_NAME = ".lesion.lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class DirLock:
    """Exclusive writer lock on a directory (created if missing), as a context manager.

    A second writer, in this or another process, gets a `LesionError` naming the holder's pid,
    host and start time.
    """

    def __init__(self, directory: str | Path, what: str = "run directory") -> None:
        self.dir = Path(directory)
        self.file = self.dir / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._try_lock(fd):
                holder = _read(fd)
                os.close(fd)
                raise LesionError(self._busy(holder))
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file that its last holder removed while we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_me()).encode())
        os.fsync(fd)
        self._fd = fd

    def _try_lock(self, fd: int) -> bool:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True
        holder = _read(fd)  # pragma: no cover - no flock: the pid decides
        return not holder or holder.get("host") != socket.gethostname() or not _alive(int(holder.get("pid", 0)))

    def _busy(self, holder: dict[str, Any]) -> str:
        who = (
            f"process {holder.get('pid')} on host {holder.get('host')!r}, started {holder.get('started')}"
            if holder else "another process"
        )
        return (
            f"--out: {self.what} {str(self.dir)!r} is being written by {who}; one writer at a time. "
            f"Wait for it to finish (then rerun to resume), or use another --out"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.file.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def holder(directory: str | Path) -> dict[str, Any] | None:
    """Who holds the lock of ``directory`` now (pid, host, started), or None when nobody does."""
    path = Path(directory) / LOCK_NAME
    if not path.is_file():
        return None
    lock = DirLock(directory)
    fd = os.open(path, os.O_RDWR)
    try:
        if lock._try_lock(fd):
            return None
        return _read(fd) or {}
    finally:
        os.close(fd)


def _me() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _alive(pid: int) -> bool:  # pragma: no cover - used where flock is missing
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0
