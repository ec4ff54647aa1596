"""Files written whole or not at all, and file hashes: what every writer of results shares."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from lesion._errors import LesionError


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(partial)`` and rename ``partial`` to ``path``: a reader sees the old file or the new one.

    ``partial`` is ``NAME.partial.SUFFIX`` beside ``path`` (it keeps the suffix, so ``np.save`` and
    ``savefig`` add nothing and infer the format); it is removed if ``write`` fails.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda p: p.write_text("hi")).read_text()
    'hi'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial{path.suffix}")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def file_sha256(path: Path, what: str) -> str:
    """sha256 of a file read in 1 MiB blocks; ``what`` names it in the error when it is missing."""
    if not path.is_file():
        raise LesionError(f"{what} {str(path)!r} does not exist or is not a file")
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()
