"""An inbox folder for files dropped by hand or by another system.

Each file is routed by its form: `.jsonl` memes (images beside it or in `images/`),
`.tsv` MediaEval-style posts, and ClaimReview in `.json`, `.jsonld`, `.html`, `.txt`
(a saved `claims:search` response is recognised too). Image files are only read when a
record names them. Anything else is quarantined whole so that nobody wonders where it went.
The watermark is each file's digest: a re-run reads only new or changed files.

Nothing outside the folder is read: a symlink leading out, a symlinked folder, a FIFO or
device, a hidden file and a README are each counted as skipped with a reason (once per
version of the file), and a file that fails is quarantined without stopping the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from mmd.config import MEME_PRESETS, InboxSource
from mmd.safe_read import InputRefused
from mmd.sources import claimreview, mediaeval, memes
from mmd.sources.base import SourceContext, Yield, list_folder, read_guarded, unreadable

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
README = {"readme.md", "readme.txt", "readme"}


def _images_root(path: Path) -> Path:
    beside = path.parent / "images"
    return beside if beside.is_dir() and not beside.is_symlink() else path.parent


def _unknown(ctx: SourceContext, path: Path, rel: str) -> Iterator[Yield]:
    data = ctx.read_file(path)
    new, digest = ctx.file_is_new(path, data)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    suffix = path.suffix.lower()
    yield ctx.quarantine("unknown_file_type", f"the inbox does not know what {suffix or 'a file without suffix'} files hold",
                         rel, data)
    ctx.mark_file(path, digest)


def read_one(ctx: SourceContext, cfg: InboxSource, path: Path, rel: str) -> Iterator[Yield]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from memes.read_jsonl(ctx, path, MEME_PRESETS[cfg.meme_preset], _images_root(path), memes.split_of(path))
    elif suffix == ".tsv":
        yield from mediaeval.read_tsv(
            ctx, path, _images_root(path), {"fake": 1, "real": 0}, cfg.mediaeval_missing_images, memes.split_of(path)
        )
    elif suffix in claimreview.SUFFIXES:
        yield from claimreview.read_file(ctx, path)
    else:
        yield from _unknown(ctx, path, rel)


def read(ctx: SourceContext, cfg: InboxSource) -> Iterator[Yield]:
    try:
        root = ctx.local_path(cfg.path)
    except InputRefused as exc:
        yield ctx.quarantine(exc.code, str(exc), cfg.path)
        return
    if not root.is_dir():
        yield ctx.quarantine("missing_location", f"inbox folder {root} does not exist", cfg.path)
        return
    for path, skip in list_folder(ctx, root):
        rel = path.relative_to(root).as_posix()
        if skip is None and path.suffix.lower() in IMAGE_SUFFIXES:
            continue  # read when a record names it, stored content-addressed: not a record itself
        if skip is None and path.name.lower() in README:
            skip = "readme"
        if skip is None:
            yield from read_guarded(ctx, path, rel, lambda: read_one(ctx, cfg, path, rel))
        elif skip.startswith("unreadable:"):
            yield unreadable(ctx, path, skip.removeprefix("unreadable:"), rel)
        else:
            yield from ctx.skip_file(path, skip, rel)
