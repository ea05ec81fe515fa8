"""Small helpers every stage uses: atomic writes, a file lock, progress on long work."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")
TMP_PREFIX = ".tmp-"  # a half-written file's name: never a name a reader looks for


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write to; on success it replaces `path` in one rename, so a crash
    leaves the old file or the new one, never half of one. `durable`: fsync the file and its folder too
    (the registry's pointers). On error the temporary file is removed and the error goes on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = False) -> None:
    with atomic_path(path, durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def dumps(value: Any) -> str:
    """JSON as every file of mmd writes it: sorted keys, indented, UTF-8, one trailing newline."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_json(path: Path, value: Any, durable: bool = False) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(path, dumps(value), durable)


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[bool]:
    """An exclusive flock on `path` for the block: yields True, or False at once when `wait` is False
    and another process holds it. Released when the block ends, or by the OS when the process dies."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


PROGRESS_EVERY_S = 30.0  # off a terminal: a progress line this often (and one at the end)


def _progress_lines(items: Iterable[T], description: str, total: int | None, every_s: float) -> Iterator[T]:
    """Plain lines on stderr for logs (a DVC stage's, a flow's): count, total, rate, at most every `every_s`."""
    import time

    started = last = time.monotonic()
    n = 0

    def line(final: bool = False) -> None:
        elapsed = max(time.monotonic() - started, 1e-9)
        of = f"/{total}" if total is not None else ""
        print(f"{description}: {n}{of}{' done' if final else ''} in {elapsed:.0f}s ({n / elapsed:.1f}/s)",
              file=sys.stderr, flush=True)

    for x in items:
        yield x
        n += 1
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            line()
    if time.monotonic() - started >= every_s:  # short work stays quiet
        line(final=True)


def progress(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None,
             every_s: float | None = None) -> Iterator[T]:
    """A rich progress bar on a terminal; elsewhere (a log, CI, a DVC stage) a line every PROGRESS_EVERY_S
    seconds, so a long stage is never silent until it ends."""
    if not enabled:
        yield from items
        return
    if not sys.stderr.isatty():
        yield from _progress_lines(items, description, total, PROGRESS_EVERY_S if every_s is None else every_s)
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        for x in items:
            yield x
            bar.advance(task)


def read_parquet(path: Path, columns: list[str] | None = None):
    """One Parquet file as a pyarrow Table, as pq.read_table reads it, but without pyarrow's dataset layer:
    importing that (and pandas, which it pulls in) cost about 0.4 s of every stage process's start."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as f:
        return f.read(columns=columns)


def cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies from /proc/stat: on a VM, time the host gave to others (benchmarks report it)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return (fields[7] if len(fields) > 7 else 0), sum(fields)
