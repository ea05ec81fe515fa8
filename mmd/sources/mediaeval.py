"""Social posts in the MediaEval "Verifying Multimedia Use" TSV form.

Header: post_id, post_text, user_id, image_id(s), username, timestamp, label. A post
may name several images; the first one present is the item's image, the rest are kept
in `extra`. Posts with none of their images present are kept text-only or skipped,
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
from mmd.items import Item, extra_json, make_item_id
from mmd.sources.base import SourceContext, Skipped, Yield, image_rejected, read_lines

FAMILY = "mediaeval"
COLUMNS = ["post_id", "post_text", "user_id", "image_id(s)", "username", "timestamp", "label"]
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".gif", ".webp")
_EVENT = re.compile(r"(_(fake|real))?(_\d+)?$", re.I)


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
    new, digest = ctx.file_is_new(path)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    header_seen = False
    for lineno, line, raw in read_lines(ctx, path):
        ref = f"{path.name}:{lineno}"
        if line is None:
            yield ctx.quarantine("not_utf8", "line is not UTF-8", ref, raw)
            continue
        cols = line.split("\t")
        if not header_seen and [c.strip() for c in cols] == COLUMNS:
            header_seen = True
            continue
        if len(cols) != len(COLUMNS):
            yield ctx.quarantine("bad_columns", f"expected {len(COLUMNS)} tab-separated columns, got {len(cols)}", ref, line)
            continue
        post_id, text, user_id, image_ids, username, timestamp, label_raw = (c.strip() for c in cols)
        if not post_id:
            yield ctx.quarantine("missing_field", "post has no post_id", ref, line)
            continue
        if label_raw not in labels:
            yield ctx.quarantine("unknown_label", f"label {label_raw!r} is not one of {sorted(labels)}", ref, line)
            continue
        if len(text.encode("utf-8")) > ctx.cfg.max_text_bytes:
            yield ctx.quarantine("text_too_large", f"text is over {ctx.cfg.max_text_bytes} bytes", ref, line)
            continue
        ids = [i.strip() for i in image_ids.split(",") if i.strip()]
        item_id = make_item_id(FAMILY, f"{ctx.name}:{post_id}", text, None)
        present = [(i, f) for i in ids if (f := _find_image(images_root, i))]
        stored = None
        if present:
            try:
                stored = ctx.store_image(images_root, present[0][1])
            except ImageRejected as exc:
                yield image_rejected(ctx, exc, ref, line, item_id)
                continue
        elif missing_images == "skip":
            ctx.counters["posts_without_images_skipped"] += 1
            yield Skipped("no_image_present", ref)
            continue
        else:
            ctx.counters["posts_without_images_text_only"] += 1
        yield Item(
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
            published_at=parse_timestamp(timestamp),
            split=split,
            group=event_of(present[0][0] if present else ids[0]) if ids else None,
            extra=extra_json(user_id=user_id, username=username, image_ids=ids, image_id=present[0][0] if present else None),
        ).finalise()
    ctx.mark_file(path, digest)


def read(ctx: SourceContext, cfg: MediaEvalSource) -> Iterator[Yield]:
    path = ctx.settings.path(cfg.file)
    if not path.is_file():
        yield ctx.quarantine("missing_location", f"{path} does not exist", cfg.file)
        return
    yield from read_tsv(ctx, path, ctx.settings.path(cfg.images_dir), cfg.labels, cfg.missing_images, cfg.split)
