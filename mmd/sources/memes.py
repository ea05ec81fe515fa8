"""Meme datasets in jsonl + image-folder form (HarMeme, Hateful Memes, MAMI, generic).

Field names differ between datasets; a small `MemeSpec` (a preset or one in params)
maps them. A label outside the spec's table is quarantined, never guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from mmd.config import MemeSource, MemeSpec
from mmd.images import ImageRejected
from mmd.items import extra_json, make_item_id
from mmd.safe_read import InputRefused, loads_json
from mmd.sources.base import SourceContext, Yield, guard_record, image_rejected, make_item, read_guarded, read_lines

FAMILY = "memes"


def _label(record: dict, spec: MemeSpec) -> tuple[str | None, Any]:
    """(original label as a string or None, the rest of a list-valued label field)."""
    value = record.get(spec.label_field)
    rest: Any = None
    if isinstance(value, list) and spec.label_index is not None:
        rest = value[spec.label_index + 1 :] or None
        value = value[spec.label_index] if len(value) > spec.label_index else None
    if value is None:
        return None, rest
    if isinstance(value, bool):
        value = int(value)
    return str(value).strip(), rest


def record_to_item(
    ctx: SourceContext, record: Any, spec: MemeSpec, images_root: Path, ref: str, raw: str, split: str | None
) -> Yield:
    if not isinstance(record, dict):
        return ctx.quarantine("bad_shape", "a meme record must be a JSON object", ref, raw)
    native = record.get(spec.id_field)
    text = record.get(spec.text_field)
    if text is None and ctx.cfg.ocr.enabled:
        text = ""  # no caption in the record: the picture's text is read at make_item
    image_ref = record.get(spec.image_field)
    missing = [f for f, v in ((spec.id_field, native), (spec.text_field, text), (spec.image_field, image_ref)) if v is None]
    if missing:
        return ctx.quarantine("missing_field", f"meme record lacks {', '.join(missing)}", ref, raw)
    if not isinstance(text, str):
        return ctx.quarantine("bad_type", f"{spec.text_field} must be a string", ref, raw)
    if not isinstance(native, (str, int)) or isinstance(native, bool) or not isinstance(image_ref, str):
        bad = spec.id_field if not isinstance(native, (str, int)) or isinstance(native, bool) else spec.image_field
        return ctx.quarantine("bad_field", f"field `{bad}` must be text, got {type(record.get(bad)).__name__}", ref, raw)
    if len(text.encode("utf-8", "surrogatepass")) > ctx.cfg.max_text_bytes:
        return ctx.quarantine("text_too_large", f"text is over {ctx.cfg.max_text_bytes} bytes", ref, raw)
    original, rest = _label(record, spec)
    label = None
    if original is not None:
        if original not in spec.labels:
            return ctx.quarantine(
                "unknown_label", f"label {original!r} is not one of {sorted(spec.labels)}", ref, raw
            )
        label = spec.labels[original]
    if spec.image_prefix_strip and image_ref.startswith(spec.image_prefix_strip):
        image_ref = image_ref[len(spec.image_prefix_strip) :]
    item_id = make_item_id(FAMILY, f"{ctx.name}:{native}", text, None)
    try:
        img = ctx.store_image(images_root, image_ref)
    except ImageRejected as exc:
        return image_rejected(ctx, exc, ref, raw, item_id)
    lang_field = "lang" if record.get("lang") is not None else "language"
    return make_item(
        ctx, ref, raw, {"language": lang_field},
        id=item_id,
        source=ctx.name,
        source_family=FAMILY,
        kind="meme",
        text=text,
        native_id=str(native),
        image_path=img.rel_path,
        image_sha256=img.sha256,
        image_width=img.width,
        image_height=img.height,
        label=label,
        label_original=original,
        language=record.get(lang_field),
        split=split,
        group=img.sha256,  # one meme image, one side of any split
        extra=extra_json(target=rest, image_ref=image_ref),
    )


def read_jsonl(ctx: SourceContext, path: Path, spec: MemeSpec, images_root: Path, split: str | None) -> Iterator[Yield]:
    data = ctx.read_file(path)
    new, digest = ctx.file_is_new(path, data)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    for lineno, line, raw in read_lines(data):
        ref = f"{path.name}:{lineno}"
        if line is None:
            yield ctx.quarantine("not_utf8", "line is not UTF-8", ref, raw)
            continue
        try:
            record = loads_json(line, ctx.cfg.max_json_depth)
        except InputRefused as exc:
            yield ctx.quarantine(exc.code, str(exc), ref, raw)
            continue
        yield guard_record(ctx, ref, raw, lambda: record_to_item(ctx, record, spec, images_root, ref, line, split))
    ctx.mark_file(path, digest)


def split_of(path: Path) -> str | None:
    stem = path.stem.lower()
    for name in ("train", "val", "dev", "test"):
        if stem == name or stem.startswith(name + "_") or stem.endswith("_" + name):
            return "val" if name == "dev" else name
    return None


def read(ctx: SourceContext, cfg: MemeSource) -> Iterator[Yield]:
    try:
        images_root = ctx.local_path(cfg.images_dir)
    except InputRefused as exc:
        yield ctx.quarantine(exc.code, str(exc), cfg.images_dir)
        return
    for name in cfg.files:
        try:
            path = ctx.local_path(name)
        except InputRefused as exc:
            yield ctx.quarantine(exc.code, str(exc), name)
            continue
        if not path.is_file():
            yield ctx.quarantine("missing_location", f"{path} does not exist", name)
            continue
        split = split_of(path) if cfg.split_from_filename else None
        yield from read_guarded(ctx, path, name, lambda: read_jsonl(ctx, path, cfg.mapping(), images_root, split))
