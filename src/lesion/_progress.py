"""Progress of long work, on stderr: a rich bar on a terminal, a plain line about every 10 s otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

#: Seconds between two plain progress lines when stderr is not a terminal.
LINE_INTERVAL = 10.0


class Advance:
    """``advance(n)``: n steps done. ``advance.tick(x)``: x steps' worth of work inside steps not yet done
    (e.g. the data batches of a round of lesions), so the display moves before the step completes.

    The display shows the larger of the two counts, so ticks never count twice.
    """

    def __init__(self, total: int, what: str, show: Any = None) -> None:
        self.total, self.what = total, what
        self.done = 0.0
        self.ticked = 0.0
        self._show = show

    def __call__(self, n: float = 1) -> None:
        self.done += n
        self._update()

    def tick(self, x: float) -> None:
        self.ticked += x
        self._update()

    @property
    def shown(self) -> float:
        return min(float(self.total), max(self.done, self.ticked))

    def _update(self) -> None:
        if self._show is not None:
            self._show(self.shown)


@contextmanager
def progress_bar(total: int, what: str, *, enabled: bool = True, stream: TextIO | None = None) -> Iterator[Advance]:
    """Progress over ``total`` steps; yields an :class:`Advance`. Disabled: it records, shows nothing.

    On a terminal: a rich bar (done, elapsed, remaining). Otherwise (output redirected): one plain
    line about every :data:`LINE_INTERVAL` seconds — done, rate, ETA — and one at the end.
    """
    stream = stream or sys.stderr
    if not enabled:
        yield Advance(total, what)
        return
    if not stream.isatty():
        line = _Lines(total, what, stream)
        advance = Advance(total, what, line.show)
        try:
            yield advance
        finally:
            line.finish(advance.shown)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=stream), transient=False) as bar:
        task = bar.add_task(what, total=total)
        yield Advance(total, what, lambda shown: bar.update(task, completed=shown))


class _Lines:
    """Plain progress lines: ``what: 12/96 (12 %), 0.8/s, ETA 0:01:45``."""

    def __init__(self, total: int, what: str, stream: TextIO) -> None:
        self.total, self.what, self.stream = total, what, stream
        self.start = self.last = time.monotonic()

    def show(self, shown: float) -> None:
        now = time.monotonic()
        if now - self.last >= LINE_INTERVAL:
            self.last = now
            self._print(shown, now)

    def finish(self, shown: float) -> None:
        self._print(shown, time.monotonic(), final=True)

    def _print(self, shown: float, now: float, final: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = shown / elapsed
        if final:
            tail = f"in {_clock(elapsed)}"
        else:
            tail = f"{rate:.3g}/s, ETA {_clock((self.total - shown) / rate) if rate > 0 else '?'}"
        pct = 100 * shown / self.total if self.total else 100.0
        print(f"{self.what}: {shown:,.0f}/{self.total:,} ({pct:.0f} %), {tail}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
