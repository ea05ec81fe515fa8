"""What every source shares: the context it reads with, what it may yield, and the guards that
keep one bad record or one bad file from stopping the rest.

- `make_item` checks every field against the items table's schema as the item is made: a
  record that does not fit is quarantined (`bad_field`, naming the field), never written.
- `read_guarded` runs one file's reader: a file that raises is quarantined whole
  (`file_error`, with the exception) and the source goes on to the next file.
- `list_folder` walks a source folder without leaving it: symlinks out, FIFOs, dotfiles and
  the like come back as `Skipped` with a reason, so the reconciliation stays exact.
- `SourceContext.local_path` confines locations to `ingest.allowed_roots`.
"""

from __future__ import annotations

import json
import os
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import pyarrow as pa

from mmd.config import IngestConfig, Settings
from mmd.errors import SourceUnavailable  # noqa: F401  (raised by sources, re-exported)
from mmd.images import ImageRejected, ImageStore, StoredImage
from mmd.items import ITEM_SCHEMA, Item, sha256_hex
from mmd.quarantine import QuarantineRecord, StorageError, quarantine
from mmd.safe_read import InputRefused, read_capped

# fetch failures worth a retry: the world was down, not the input bad
TRANSIENT_FETCH_CODES = {"timeout", "unreachable", "http_429", "http_500", "http_502", "http_503", "http_504"}


@dataclass(frozen=True)
class Skipped:
    """A record or file left out on purpose, by a param or a rule (counted, never silent)."""

    reason_code: str
    ref: str


Yield = Union[Item, QuarantineRecord, Skipped]


def rating_key(text: str) -> str:
    """'  Mostly FALSE. ' -> 'mostly false': the form the ratings table is keyed by."""
    return re.sub(r"\s+", " ", text.strip().strip(".!:;,").strip()).lower()


# --------------------------------------------------------------------------- the schema, per item
_REQUIRED = {"id", "source", "source_family", "kind", "text", "ingested_at", "extra"}
# characters that render as nothing: text made only of these (and whitespace) is empty to a reader
_BLANK_LETTERS = {"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"}


def _int_range(t: pa.DataType) -> tuple[int, int]:
    bits = t.bit_width
    return (0, 2**bits - 1) if pa.types.is_unsigned_integer(t) else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def _fits(value: Any, t: pa.DataType) -> str | None:
    """Why `value` cannot be stored as `t`, or None."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not isinstance(value, str):
            return f"must be text, got {type(value).__name__}"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "holds characters that are not valid Unicode (lone surrogates)"
    elif pa.types.is_integer(t):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {type(value).__name__}"
        lo, hi = _int_range(t)
        if not lo <= value <= hi:
            return f"is {value}, outside {lo}..{hi}"
    return None


def schema_problem(item: Item, origin: dict[str, str] | None = None) -> str | None:
    """Why this item cannot be a row of the items table (naming the field), or None."""
    for f in ITEM_SCHEMA:
        value = getattr(item, f.name)
        name = f.name + (f" (from `{origin[f.name]}`)" if origin and f.name in origin else "")
        if value is None or (f.name == "content_hash" and value == ""):
            if f.name in _REQUIRED:
                return f"field {name} is missing"
            continue
        problem = _fits(value, f.type)
        if problem:
            return f"field {name} {problem}"
    return None


def invisible_only(text: str) -> bool:
    """Non-blank to str.strip() but nothing a reader sees: zero-width, format and control characters."""
    if not text.strip():
        return False
    return all(
        c.isspace() or c in _BLANK_LETTERS or unicodedata.category(c) in ("Cf", "Cc", "Zs", "Zl", "Zp")
        for c in text
    )


# --------------------------------------------------------------------------- the context
@dataclass
class SourceContext:
    """Everything a source needs while reading; it carries the source's watermark."""

    settings: Settings
    cfg: IngestConfig
    name: str
    family: str
    images: ImageStore
    state: dict  # this source's watermark, persisted by the ingest run when it succeeds
    counters: Counter = field(default_factory=Counter)
    unknown_ratings: Counter = field(default_factory=Counter)
    files_tried: int = 0  # files (or pages) a read was attempted on
    files_failed_transient: int = 0  # of those, how many failed for a reason a retry may cure
    last_transient: str = ""

    @property
    def data_root(self) -> Path:
        return self.settings.data_dir

    def quarantine(self, code: str, reason: str, ref: str, raw: bytes | str = b"", item_id: str | None = None) -> QuarantineRecord:
        return quarantine(
            "ingest", self.name, code, reason, ref, raw, item_id,
            blob_dir=self.settings.layout.ingest_raw, data_root=self.data_root,
        )

    def rate(self, wording: str | None) -> int | None:
        """Normalise a verdict by the params table; unknown wording stays unlabeled and is counted."""
        if wording is None or not str(wording).strip():
            return None
        key = rating_key(str(wording))
        table = {rating_key(k): v for k, v in self.cfg.ratings.items()}
        if key in table:
            return table[key]
        self.unknown_ratings[key] += 1
        return None

    def store_image(self, root: Path, reference: str) -> StoredImage:
        return self.images.put_file(root, reference)

    def read_picture_text(self, image_path: str):
        """OCR of a stored picture (`ingest.ocr`), counted: `text_from_ocr` or `ocr_read_nothing`."""
        from mmd.ocr import read_text

        read = read_text(self.data_root / image_path, self.cfg.ocr)
        self.counters["text_from_ocr" if read is not None else "ocr_read_nothing"] += 1
        return read

    # ----------------------------------------------------------------- where it may read
    def allowed_roots(self) -> list[Path]:
        return [self.settings.root] + [self.settings.path(r) for r in self.cfg.allowed_roots]

    def local_path(self, value: str) -> Path:
        """The path a location names, refused (InputRefused `location_refused`) when it resolves,
        symlinks followed, outside every allowed root: a params file may not read the host."""
        path = self.settings.path(value)
        real = path.resolve()
        for root in self.allowed_roots():
            r = root.resolve()
            if real == r or r in real.parents:
                return path
        raise InputRefused(
            "location_refused",
            f"{value} is outside the folders this source may read ({', '.join(str(r) for r in self.allowed_roots())}); "
            "add a folder to ingest.allowed_roots to allow it",
        )

    # ----------------------------------------------------------------- bounded reads
    def read_file(self, path: Path) -> bytes:
        """A local file's bytes within `ingest.max_file_bytes`."""
        return read_capped(path, self.cfg.max_file_bytes)

    # ----------------------------------------------------------------- watermark
    def file_is_new(self, path: Path, data: bytes | None = None) -> tuple[bool, str]:
        """Whether a file changed since the last successful ingest, and its digest.

        Pass the bytes when the caller reads the whole file anyway, so it is read once."""
        digest = sha256_hex(self.read_file(path) if data is None else data)
        files = self.state.setdefault("files", {})
        return files.get(self._key(path)) != digest, digest

    def mark_file(self, path: Path, digest: str) -> None:
        self.state.setdefault("files", {})[self._key(path)] = digest

    def known_version(self, bucket: str, path: Path, reason: str) -> bool:
        """Whether this version of a file (its size and mtime, not its bytes: it is never read, so a
        FIFO or a huge file costs nothing) was already counted under `bucket`; records it if not."""
        try:
            st = path.lstat()
            signature = f"{reason}:{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            signature = f"{reason}:gone"
        seen = self.state.setdefault(bucket, {})
        key = self._key(path, resolve=False)
        if seen.get(key) == signature:
            return True
        seen[key] = signature
        return False

    def skip_file(self, path: Path, reason: str, ref: str) -> Iterator[Skipped]:
        """A file left out, counted once per version of it."""
        if self.known_version("skipped", path, reason):
            self.counters["unchanged_skipped_files"] += 1
            return
        yield Skipped(reason, ref)

    def _key(self, path: Path, resolve: bool = True) -> str:
        p = path.resolve() if resolve else Path(os.path.abspath(path))
        try:
            return p.relative_to(self.settings.root).as_posix()
        except ValueError:
            return str(p)

    # ----------------------------------------------------------------- outcomes
    def file_failed(self, why: str, transient: bool) -> None:
        if transient:
            self.files_failed_transient += 1
            self.last_transient = why[:300]

    @property
    def unavailable(self) -> str | None:
        """Why the whole source should be retried (every file it tried failed transiently), or None."""
        if self.files_tried and self.files_failed_transient == self.files_tried:
            return f"all {self.files_tried} files or pages failed; last: {self.last_transient}"
        return None


# --------------------------------------------------------------------------- items
def make_item(ctx: SourceContext, ref: str, raw: bytes | str, origin: dict[str, str] | None = None, **fields: Any) -> Yield:
    """An item from a source's fields, checked against the schema first: a field that does not fit
    (a number where text belongs, a list for a language) quarantines the record as `bad_field`."""
    item = Item(**fields)
    problem = schema_problem(item, origin)
    if problem:
        item_id = item.id if isinstance(item.id, str) else None
        return ctx.quarantine("bad_field", problem, ref, raw, item_id)
    if item.image_path and ctx.cfg.ocr.enabled and (not item.text.strip() or invisible_only(item.text)):
        read = ctx.read_picture_text(item.image_path)
        if read is not None:  # else the item goes on without text, and validation's text rule decides
            item.text = read.text
            item.extra = json.dumps({**json.loads(item.extra or "{}"), "text_source": "ocr",
                                     "ocr_confidence": read.confidence}, ensure_ascii=False)
    if invisible_only(item.text):
        return ctx.quarantine("empty_text", "the text is only invisible characters (zero-width, format or control)",
                              ref, raw, item.id)
    return item.finalise()


def guard_record(ctx: SourceContext, ref: str, raw: bytes | str, build: Callable[[], Yield]) -> Yield:
    """One record's mapping; an unexpected error in it quarantines that record (`record_error`), not the file.
    Our own storage failing (StorageError) is no fault of the record: it stops the source."""
    try:
        return build()
    except StorageError:
        raise
    except Exception as exc:
        return ctx.quarantine("record_error", f"{type(exc).__name__}: {exc}"[:500], ref, raw)


def read_guarded(ctx: SourceContext, path: Path, ref: str, read: Callable[[], Iterator[Yield]]) -> Iterator[Yield]:
    """Run one file's reader. A file refused whole (over the byte cap, not a regular file) or one
    whose reader raises is one quarantine record, and the source goes on to the next file.

    An OSError (unreadable, gone) counts as transient: when every file a source tried failed so,
    the run raises SourceUnavailable so the flow's retry means something. The file's watermark
    does not move, so the next run reads it again."""
    ctx.files_tried += 1
    try:
        yield from read()
    except StorageError:
        raise
    except InputRefused as exc:  # refused unread: counted once per version of the file, like one read
        if ctx.known_version("refused", path, exc.code):
            ctx.counters["unchanged_files"] += 1
        else:
            yield ctx.quarantine(exc.code, str(exc), ref)
    except Exception as exc:
        transient = isinstance(exc, OSError)
        ctx.file_failed(f"{type(exc).__name__}: {exc}", transient)
        raw = b""
        if not transient:  # keep the file whole beside the record, if it can still be read
            try:
                raw = ctx.read_file(path)
            except (OSError, InputRefused):
                pass
        yield ctx.quarantine("file_error", f"the file could not be read to its end: {type(exc).__name__}: {exc}"[:1000],
                             ref, raw)


def image_rejected(ctx: SourceContext, exc: ImageRejected, ref: str, raw: str, item_id: str | None = None) -> QuarantineRecord:
    return ctx.quarantine(exc.code, str(exc), ref, raw, item_id)


def read_lines(data: bytes) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when not UTF-8, raw bytes) for each non-blank line."""
    start, lineno, n = 0, 0, len(data)
    while start < n:
        end = data.find(b"\n", start)
        end = n if end < 0 else end + 1
        raw = data[start:end]
        start, lineno = end, lineno + 1
        if not raw.strip():
            continue
        try:
            yield lineno, raw.decode("utf-8").rstrip("\r\n"), raw
        except UnicodeDecodeError:
            yield lineno, None, raw


# --------------------------------------------------------------------------- folders
HIDDEN = "hidden_file"


def list_folder(ctx: SourceContext, root: Path) -> Iterator[tuple[Path, str | None]]:
    """Every file under `root`, sorted, as (path, None) to read or (path, reason) to skip.

    Never leaves `root`: a symlink whose target is outside is skipped (`symlink_outside`), a
    symlinked folder is not followed (`symlink_folder`; what it holds inside `root` is reached
    through its real path), anything not a regular file (FIFO, socket, device) is skipped
    (`not_a_regular_file`), and so are hidden files and folders (`hidden_file`). A folder that
    cannot be listed comes back as (folder, OSError message) via `unreadable:` prefix."""
    real_root = root.resolve()
    found: list[tuple[Path, str | None]] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            found.append((folder, f"unreadable:{exc.strerror or exc}"))
            continue
        for e in entries:
            p = Path(e.path)
            try:
                if e.name.startswith("."):
                    found.append((p, HIDDEN))
                elif e.is_symlink():
                    target = p.resolve()
                    if target != real_root and real_root not in target.parents:
                        found.append((p, "symlink_outside"))
                    elif target.is_dir():
                        found.append((p, "symlink_folder"))
                    elif target.is_file():
                        found.append((p, None))
                    else:
                        found.append((p, "not_a_regular_file"))
                elif e.is_dir(follow_symlinks=False):
                    stack.append(p)
                elif stat.S_ISREG(e.stat(follow_symlinks=False).st_mode):
                    found.append((p, None))
                else:
                    found.append((p, "not_a_regular_file"))
            except OSError as exc:
                found.append((p, f"unreadable:{exc.strerror or exc}"))
    return iter(sorted(found, key=lambda x: x[0].as_posix()))


def unreadable(ctx: SourceContext, path: Path, why: str, ref: str) -> QuarantineRecord:
    """A folder or entry that could not even be listed: a transient file failure."""
    ctx.files_tried += 1
    ctx.file_failed(f"{path}: {why}", True)
    return ctx.quarantine("file_error", f"{path} could not be listed: {why}", ref)
