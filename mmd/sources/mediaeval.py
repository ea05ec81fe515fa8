"""Social posts in the MediaEval "Verifying Multimedia Use" TSV form.

Columns are taken by the header's names (`post_id`/`tweetId`, `post_text`/`tweetText`,
`image_id(s)`/`image_id`, … in any order); a header that lacks a needed column refuses the
whole file (`bad_header`); a file without a header is read in the 2015 order post_id,
post_text, user_id, image_id(s), username, timestamp, label. A post may name several images;
the first one present is the item's image, the rest are kept in `extra`. Posts with none of their images present are kept text-only or skipped,
by a param, and counted either way. `group` is the event (the image id's stem), so a
split by group never puts one event's viral picture on both sides.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Iterator, Literal

from mmd.config import MediaEvalSource
from mmd.images import ImageRejected
from mmd.items import extra_json, make_item_id
from mmd.safe_read import InputRefused
from mmd.sources.base import SourceContext, Skipped, Yield, guard_record, image_rejected, make_item, read_guarded, read_lines

FAMILY = "mediaeval"
# the 2015 development set's order: what a file without a header is read as
COLUMNS = ["post_id", "post_text", "user_id", "image_id(s)", "username", "timestamp", "label"]
# each column by the names releases give it (compared lower-cased); the 2016 test set orders
# them post_id, post_text, user_id, username, image_id(s), timestamp, label
ALIASES: dict[str, tuple[str, ...]] = {
    "post_id": ("post_id", "tweetid", "tweet_id", "postid", "id"),
    "post_text": ("post_text", "tweettext", "tweet_text", "posttext", "text"),
    "user_id": ("user_id", "userid"),
    "image_id(s)": ("image_id(s)", "imageid(s)", "image_id", "imageid", "image_ids", "imageids"),
    "username": ("username", "user_name", "screen_name"),
    "timestamp": ("timestamp", "created_at", "time"),
    "label": ("label",),
}
REQUIRED = ("post_id", "post_text", "image_id(s)", "label")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
_EVENT = re.compile(r"(_(fake|real))?(_\d+)?$", re.I)


def map_header(cells: list[str]) -> tuple[dict[str, int] | None, list[str]]:
    """(column -> index, missing required columns) for a header row; (None, []) when the row
    names no known column at all (a file without a header)."""
    names = [c.strip().lower() for c in cells]
    index: dict[str, int] = {}
    for column, aliases in ALIASES.items():
        for i, name in enumerate(names):
            if name in aliases:
                index.setdefault(column, i)
    if not index:
        return None, []
    return index, [c for c in REQUIRED if c not in index]


def event_of(image_id: str) -> str:
    """'sandy_fake_12' -> 'sandy', 'nepal_3' -> 'nepal'."""
    return _EVENT.sub("", image_id.strip()) or image_id.strip()


def parse_timestamp(value: str) -> str | None:
    try:
        return datetime.strptime(value.strip(), "%a %b %d %H:%M:%S %z %Y").isoformat()
    except ValueError:
        return None


def _find_image(images_root: Path, image_id: str) -> str | None:
    for ext in IMAGE_EXTS:
        if (images_root / f"{image_id}{ext}").is_file():
            return f"{image_id}{ext}"
    return None


def read_tsv(
    ctx: SourceContext,
    path: Path,
    images_root: Path,
    labels: dict[str, int],
    missing_images: Literal["text_only", "skip"],
    split: str | None,
) -> Iterator[Yield]:
    data = ctx.read_file(path)
    new, digest = ctx.file_is_new(path, data)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    columns: dict[str, int] | None = None
    width = len(COLUMNS)
    for lineno, line, raw in read_lines(data):
        ref = f"{path.name}:{lineno}"
        if line is None:
            yield ctx.quarantine("not_utf8", "line is not UTF-8", ref, raw)
            continue
        cols = line.split("\t")
        if columns is None:
            header, missing = map_header(cols)
            if missing:
                # columns by name or not at all: taken by position, usernames became image ids
                yield ctx.quarantine("bad_header", f"the header lacks {', '.join(missing)} (known names: "
                                     + "; ".join(f"{c}: {'/'.join(a)}" for c, a in ALIASES.items() if c in missing) + ")",
                                     path.name, data)
                ctx.mark_file(path, digest)
                return
            columns = header or {c: i for i, c in enumerate(COLUMNS)}
            width = len(cols) if header else len(COLUMNS)
            if header:
                continue
            ctx.counters["tsv_without_header"] += 1
        if len(cols) != width:
            yield ctx.quarantine("bad_columns", f"expected {width} tab-separated columns, got {len(cols)}", ref, line)
            continue
        row = {c: cols[i].strip() for c, i in columns.items()}
        yield guard_record(ctx, ref, raw, lambda: _post(ctx, row, ref, line, images_root, labels, missing_images, split))
    ctx.mark_file(path, digest)


def _post(ctx: SourceContext, row: dict[str, str], ref: str, line: str, images_root: Path, labels: dict[str, int],
          missing_images: str, split: str | None) -> Yield:
    post_id, text, label_raw = row["post_id"], row["post_text"], row["label"]
    if not post_id:
        return ctx.quarantine("missing_field", "post has no post_id", ref, line)
    if label_raw not in labels:
        return ctx.quarantine("unknown_label", f"label {label_raw!r} is not one of {sorted(labels)}", ref, line)
    if len(text.encode("utf-8")) > ctx.cfg.max_text_bytes:
        return ctx.quarantine("text_too_large", f"text is over {ctx.cfg.max_text_bytes} bytes", ref, line)
    ids = [i.strip() for i in row["image_id(s)"].split(",") if i.strip()]
    item_id = make_item_id(FAMILY, f"{ctx.name}:{post_id}", text, None)
    present = [(i, f) for i in ids if (f := _find_image(images_root, i))]
    stored = None
    if present:
        try:
            stored = ctx.store_image(images_root, present[0][1])
        except ImageRejected as exc:
            return image_rejected(ctx, exc, ref, line, item_id)
    elif missing_images == "skip":
        ctx.counters["posts_without_images_skipped"] += 1
        return Skipped("no_image_present", ref)
    else:
        ctx.counters["posts_without_images_text_only"] += 1
    return make_item(
        ctx, ref, line,
        id=item_id,
        source=ctx.name,
        source_family=FAMILY,
        kind="post",
        text=text,
        native_id=post_id,
        image_path=stored.rel_path if stored else None,
        image_sha256=stored.sha256 if stored else None,
        image_width=stored.width if stored else None,
        image_height=stored.height if stored else None,
        label=labels[label_raw],
        label_original=label_raw,
        published_at=parse_timestamp(row.get("timestamp", "")),
        split=split,
        group=event_of(present[0][0] if present else ids[0]) if ids else None,
        extra=extra_json(user_id=row.get("user_id"), username=row.get("username"), image_ids=ids,
                         image_id=present[0][0] if present else None),
    )


def read(ctx: SourceContext, cfg: MediaEvalSource) -> Iterator[Yield]:
    try:
        path = ctx.local_path(cfg.file)
        images_root = ctx.local_path(cfg.images_dir)
    except InputRefused as exc:
        yield ctx.quarantine(exc.code, str(exc), cfg.file)
        return
    if not path.is_file():
        yield ctx.quarantine("missing_location", f"{path} does not exist", cfg.file)
        return
    yield from read_guarded(ctx, path, cfg.file,
                            lambda: read_tsv(ctx, path, images_root, cfg.labels, cfg.missing_images, cfg.split))
