"""What every source shares: the context it reads with and what it may yield."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

from mmd.config import IngestConfig, Settings
from mmd.images import ImageRejected, ImageStore, StoredImage
from mmd.items import Item, sha256_hex
from mmd.quarantine import QuarantineRecord, quarantine


@dataclass(frozen=True)
class Skipped:
    """A record left out on purpose, by a param (counted, never silent)."""

    reason_code: str
    ref: str


Yield = Union[Item, QuarantineRecord, Skipped]


def rating_key(text: str) -> str:
    """'  Mostly FALSE. ' -> 'mostly false': the form the ratings table is keyed by."""
    return re.sub(r"\s+", " ", text.strip().strip(".!:;,").strip()).lower()


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

    # ----------------------------------------------------------------- watermark
    def file_is_new(self, path: Path, data: bytes | None = None) -> tuple[bool, str]:
        """Whether a file changed since the last successful ingest, and its digest.

        Pass the bytes when the caller reads the whole file anyway, so it is read once."""
        digest = sha256_hex(path.read_bytes() if data is None else data)
        files = self.state.setdefault("files", {})
        return files.get(self._key(path)) != digest, digest

    def mark_file(self, path: Path, digest: str) -> None:
        self.state.setdefault("files", {})[self._key(path)] = digest

    def _key(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.settings.root).as_posix()
        except ValueError:
            return str(path.resolve())


def image_rejected(ctx: SourceContext, exc: ImageRejected, ref: str, raw: str, item_id: str | None = None) -> QuarantineRecord:
    return ctx.quarantine(exc.code, str(exc), ref, raw, item_id)


def read_lines(ctx: SourceContext, path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, decoded text or None when not UTF-8, raw bytes) for each non-blank line."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, raw.decode("utf-8").rstrip("\r\n"), raw
            except UnicodeDecodeError:
                yield lineno, None, raw
