"""An inbox folder for files dropped by hand or by another system.

Each file is routed by its form: `.jsonl` memes (images beside it or in `images/`),
`.tsv` MediaEval-style posts, and ClaimReview in `.json`, `.jsonld`, `.html`, `.txt`
(a saved `claims:search` response is recognised too). Image files are only read when a
record names them. Anything else is quarantined so that nobody wonders where it went.
The watermark is each file's digest: a re-run reads only new or changed files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mmd.config import MEME_PRESETS, InboxSource
from mmd.sources import claimreview, mediaeval, memes
from mmd.sources.base import SourceContext, Yield

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
IGNORED = {".ds_store", "readme.md", "readme.txt", ".gitkeep"}


def _images_root(path: Path) -> Path:
    beside = path.parent / "images"
    return beside if beside.is_dir() else path.parent


def read(ctx: SourceContext, cfg: InboxSource) -> Iterator[Yield]:
    root = ctx.settings.path(cfg.path)
    if not root.is_dir():
        yield ctx.quarantine("missing_location", f"inbox folder {root} does not exist", cfg.path)
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES or path.name.lower() in IGNORED or path.name.startswith("."):
            continue
        if suffix == ".jsonl":
            yield from memes.read_jsonl(ctx, path, MEME_PRESETS[cfg.meme_preset], _images_root(path), memes.split_of(path))
        elif suffix == ".tsv":
            yield from mediaeval.read_tsv(
                ctx, path, _images_root(path), {"fake": 1, "real": 0}, cfg.mediaeval_missing_images, memes.split_of(path)
            )
        elif suffix in claimreview.SUFFIXES:
            yield from claimreview.read_file(ctx, path)
        else:
            data = path.read_bytes()
            new, digest = ctx.file_is_new(path, data)
            if new:
                rel = path.relative_to(root).as_posix()
                yield ctx.quarantine("unknown_file_type", f"the inbox does not know what {suffix or 'a file without suffix'} files hold", rel, data[:65536])
                ctx.mark_file(path, digest)
