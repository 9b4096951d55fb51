"""How the ``tidings`` command shows results: tables that keep ids whole, and progress.

Tables never cut an id (message, entry, schedule, campaign ids and queue names): those
columns keep their full width and the other columns wrap instead. Long operations show a
progress bar on a terminal, a plain line every few seconds on stderr otherwise (logs,
CI), and nothing at all with ``--json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TextIO

import orjson
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..core.progress import ProgressCallback

PLAIN_EVERY = 2.0  # seconds between two plain progress lines


def show_table(console: Console, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
               ids: Collection[str] = (), text: Collection[str] = (),
               title: str | None = None) -> None:
    """Print a table that never cuts an id, a number or a header word.

    ``ids`` columns (message ids, queue names ...) keep their full width; ``text``
    columns (errors, reasons) wrap anywhere; the others wrap only between words. The
    table takes two spaces between columns, one if that is what makes it fit, and when
    it cannot fit even so, each row is printed as ``column: value`` lines instead.
    """
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    for gap in (2, 1):
        widths = _widths(columns, cells, ids, text, console.width, gap)
        if widths is not None:
            out = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                        padding=(0, gap - 1, 0, 0))
            for name, width in zip(columns, widths, strict=True):
                out.add_column(name, width=width, overflow="fold", no_wrap=name in ids)
            for row in cells:
                out.add_row(*row)
            console.print(out)
            return
    if title:
        console.print(f"[bold]{escape(title)}[/bold]")
    for row in cells:
        for name, value in zip(columns, row, strict=True):
            console.print(f"{escape(name)}: {escape(value)}", soft_wrap=True, highlight=False)
        console.print()


def _widths(columns: Sequence[str], cells: list[list[str]], ids: Collection[str],
            text: Collection[str], available: int, gap: int) -> list[int] | None:
    """Column widths that fit ``available``, narrowing the roomiest column first; None if
    the narrowest allowed layout is still too wide."""
    natural, least = [], []
    for i, name in enumerate(columns):
        values = [name, *(row[i] for row in cells)]
        natural.append(max(len(v) for v in values))
        header_word = max((len(w) for w in name.split()), default=1)
        if name in ids:
            least.append(natural[-1])
        elif name in text:
            least.append(header_word)
        else:
            least.append(max([header_word, *(len(w) for v in values for w in v.split())]))
    widths = list(natural)
    excess = sum(widths) + gap * (len(widths) - 1) - available
    while excess > 0:
        room, i = max((w - m, i) for i, (w, m) in enumerate(zip(widths, least, strict=True)))
        if room <= 0:
            return None
        widths[i] -= 1
        excess -= 1
    return widths


def duration(value: timedelta | float | None) -> str:
    """A duration the way every command prints it: ``15m``, ``1h30m``, ``2d``, ``1.5s``."""
    if value is None:
        return "-"
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 60 and seconds != int(seconds):
        return f"{seconds:g}s"
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


class PlainProgress:
    """Progress as a plain line at most every ``every`` seconds (and a last one at the end)."""

    def __init__(self, label: str, stream: TextIO, every: float = PLAIN_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.stream, self.every, self.clock = label, stream, every, clock
        self._started = clock()
        self._last = self._started
        self._state: tuple[int, int | None] | None = None
        self._shown: tuple[int, int | None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self._state = (done, total)
        now = self.clock()
        if now - self._last >= self.every:
            self._last = now
            self._show()

    def finish(self) -> None:
        """The last line, if the operation lasted long enough to have shown progress."""
        if self._shown is not None and self._state != self._shown:
            self._show()

    def _show(self) -> None:
        assert self._state is not None
        done, total = self._state
        of = f"/{total}" if total is not None else ""
        self.stream.write(f"{self.label}: {done}{of} ({self.clock() - self._started:.0f}s)\n")
        self.stream.flush()
        self._shown = self._state


@contextmanager
def progress(label: str, console: Console, *, quiet: bool = False,
             stream: TextIO | None = None) -> Iterator[ProgressCallback]:
    """A progress callback for one long operation, shown as the output allows.

    ``console`` is the command's output: a terminal gets a bar (on it, gone when done);
    otherwise ``stream`` (stderr) gets plain lines. ``quiet`` (``--json``) shows nothing.
    """
    if quiet:
        yield lambda done, total: None
        return
    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as bar:
            task = bar.add_task(label, total=None)

            def update(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            yield update
        return
    import sys

    plain = PlainProgress(label, stream or sys.stderr)
    yield plain
    plain.finish()


def show_record(console: Console, data: Mapping[str, Any]) -> None:
    """One ``key: value`` line per field that has a value (maps and lists as JSON)."""
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, dict | list):
            value = orjson.dumps(value, default=str).decode()
        console.print(f"[bold]{escape(key)}[/bold]: {escape(str(value))}", soft_wrap=True,
                      highlight=False)
