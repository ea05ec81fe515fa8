"""ClaimReview fact-checks: the Data Commons feed, plain JSON / JSON-LD, and HTML pages.

Formats are sniffed per document:
- lines of `<script type="application/ld+json">{…}</script>` (the Data Commons feed),
- an HTML page with such script blocks anywhere in it,
- JSON / JSON-LD: a single object, a list, or an `@graph` (nested ones too),
- JSON lines.

Splitting is linear in the page, JSON is depth-limited before it is parsed, and a file (or a
block of it) that is not UTF-8 is quarantined with its exact bytes while the rest is read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from mmd.config import ClaimReviewSource
from mmd.http import FetchError, fetch, is_url
from mmd.items import extra_json, make_item_id, normalise_text, sha256_hex
from mmd.safe_read import InputRefused, loads_json
from mmd.sources.base import (
    TRANSIENT_FETCH_CODES, SourceContext, Yield, guard_record, list_folder, make_item, read_guarded, unreadable,
)

FAMILY = "claimreview"
SUFFIXES = {".json", ".jsonld", ".jsonl", ".html", ".htm", ".txt"}
# an opening tag is bounded (no tag is 4 KiB long), so a page of broken tags stays linear
_SCRIPT_OPEN = re.compile(r"<script\b[^>]{0,4096}?type\s*=\s*[\"']application/ld\+json[\"'][^>]{0,4096}>", re.I)
_SCRIPT_CLOSE = re.compile(r"</script\s*>", re.I)
_SURROGATE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape
_UNPARSED = object()


def _types(obj: dict) -> set[str]:
    t = obj.get("@type", [])
    return {str(x).split("/")[-1] for x in (t if isinstance(t, list) else [t])}


def find_claimreviews(obj: Any) -> Iterator[dict]:
    """Every ClaimReview object in a parsed JSON-LD value: objects, lists, @graph, nesting."""
    if isinstance(obj, list):
        for x in obj:
            yield from find_claimreviews(x)
    elif isinstance(obj, dict):
        if "ClaimReview" in _types(obj):
            yield obj
            return
        for key in ("@graph", "mainEntity", "review", "hasPart", "itemListElement", "item"):
            if key in obj:
                yield from find_claimreviews(obj[key])


def _scripts(text: str) -> Iterator[tuple[str, int]]:
    """(body, line number) of each ld+json script block, in one pass over the text."""
    pos, line, counted = 0, 1, 0
    while True:
        m = _SCRIPT_OPEN.search(text, pos)
        if not m:
            return
        end = _SCRIPT_CLOSE.search(text, m.end())
        if not end:
            return  # no closing tag after this one: no complete block is left
        line += text.count("\n", counted, m.start())  # counted from the last block on, not from the top
        counted = m.start()
        yield text[m.end() : end.start()], line
        pos = end.end()


def _parses_alone(line: str, max_depth: int) -> bool:
    try:
        return isinstance(loads_json(line, max_depth), (dict, list))
    except InputRefused:
        return False


def _split(text: str, max_depth: int) -> tuple[list[tuple[str, str, Any]], str]:
    """(ref suffix, JSON text, its parsed value, or InputRefused, or _UNPARSED) chunks, and the format."""
    scripts = [(f"line {line}", body.strip(), _UNPARSED) for body, line in _scripts(text)]
    if scripts:
        return scripts, "ld+json scripts"
    if text.lstrip().startswith("<"):
        return [], "html without ld+json"
    try:
        return [("document", text, loads_json(text, max_depth))], "json"
    except InputRefused as exc:
        refused = exc
    if refused.code == "bad_json":
        lines = [(f"line {i}", ln, _UNPARSED) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        # JSON lines only if lines stand alone as documents: a pretty-printed document with one
        # bad value is one bad document, not one record per line
        if len(lines) > 1 and any(_parses_alone(ln, max_depth) for _, ln, _ in lines[:3]):
            return lines, "json lines"
    return [("document", text, refused)], "json"


def split_documents(text: str, max_depth: int = 64) -> tuple[list[tuple[str, str]], str]:
    """Cut a document into (ref suffix, JSON text) chunks, and name the format found; linear in the text."""
    chunks, fmt = _split(text, max_depth)
    return [(where, body) for where, body, _ in chunks], fmt


def _text(value: Any) -> Any:
    """The text of a JSON-LD value: a string, an object's `name` / `@value`, a list's first;
    None when there is none. Anything else (a number, a boolean) comes back as it is, for the
    schema check to refuse by name."""
    if isinstance(value, list):
        return _text(value[0]) if value else None
    if isinstance(value, dict):
        inner = value.get("name") if value.get("name") is not None else value.get("@value")
        return None if inner is None or isinstance(inner, dict) else _text(inner)
    if isinstance(value, str):
        return value.strip() or None
    return value


def _url(value: Any) -> Any:
    """A url field: a string, or an object's `@id` / `url`."""
    if isinstance(value, list):
        return _url(value[0]) if value else None
    if isinstance(value, dict):
        return _url(value.get("@id") if value.get("@id") is not None else value.get("url"))
    return _text(value)


def claimreview_to_item(ctx: SourceContext, review: dict, ref: str, raw: str) -> Yield:
    """Map one ClaimReview object onto an item, or say why it cannot be one."""
    claim = _text(review.get("claimReviewed"))
    rating = review.get("reviewRating")
    if not claim:
        return ctx.quarantine("missing_field", "ClaimReview has no claimReviewed", ref, raw)
    if not isinstance(claim, str):
        return ctx.quarantine("bad_field", f"field text (from `claimReviewed`) must be text, got {type(claim).__name__}",
                              ref, raw)
    if len(claim.encode("utf-8", "surrogatepass")) > ctx.cfg.max_text_bytes:
        return ctx.quarantine("text_too_large", f"claimReviewed is over {ctx.cfg.max_text_bytes} bytes", ref, raw)
    if not isinstance(rating, dict):
        return ctx.quarantine("missing_field", "ClaimReview has no reviewRating", ref, raw)
    wording = _text(rating.get("alternateName")) or _text(rating.get("name"))
    if wording is None:
        return ctx.quarantine("missing_field", "reviewRating has no alternateName or name", ref, raw)
    if not isinstance(wording, str):
        return ctx.quarantine("bad_field", f"field label_original (from `reviewRating.alternateName`) must be text, "
                              f"got {type(wording).__name__}", ref, raw)
    url = _url(review.get("url"))
    reviewed = review.get("itemReviewed") if isinstance(review.get("itemReviewed"), dict) else {}
    native = f"{url}#{sha256_hex(normalise_text(claim))[:12]}" if isinstance(url, str) else None
    return make_item(
        ctx, ref, raw,
        {"language": "inLanguage", "url": "url", "publisher": "author", "published_at": "datePublished",
         "claim_date": "itemReviewed.datePublished"},
        id=make_item_id(FAMILY, native, claim, None),
        source=ctx.name,
        source_family=FAMILY,
        kind="fact_check",
        text=claim,
        native_id=native,
        label=ctx.rate(wording),
        label_original=wording,
        language=_text(review.get("inLanguage")),
        url=url,
        publisher=_text(review.get("author")),
        published_at=_text(review.get("datePublished")),
        claim_date=_text(reviewed.get("datePublished")),
        extra=extra_json(
            claimant=_text(reviewed.get("author")),
            rating_value=rating.get("ratingValue"),
            best_rating=rating.get("bestRating"),
            worst_rating=rating.get("worstRating"),
            license=_text(review.get("sdLicense")),
        ),
    )


def _raw(body: str) -> bytes:
    return body.encode("utf-8", "surrogateescape")


def parse_document(ctx: SourceContext, text: str, ref: str) -> Iterator[Yield]:
    """Every item (or quarantine record) in one ClaimReview document.

    `text` may hold bytes that were not UTF-8 (decoded with surrogateescape): a chunk with any
    is one `not_utf8` record with its exact bytes, and the other chunks are read."""
    chunks, fmt = _split(text, ctx.cfg.max_json_depth)
    if not chunks:
        yield ctx.quarantine("no_claimreview", f"no ClaimReview found ({fmt})", ref, _raw(text))
        return
    for where, body, value in chunks:
        cref = f"{ref}:{where}"
        if m := _SURROGATE.search(body):
            yield ctx.quarantine("not_utf8", f"not UTF-8 text (at character {m.start()} of this {where})", cref, _raw(body))
            continue
        if value is _UNPARSED:
            try:
                value = loads_json(body, ctx.cfg.max_json_depth)
            except InputRefused as exc:
                value = exc
        if isinstance(value, InputRefused):
            yield ctx.quarantine(value.code, str(value), cref, body)
            continue
        if isinstance(value, dict) and "claims" in value and "ClaimReview" not in _types(value):
            from mmd.sources.factcheck_api import response_to_items  # the API's own shape

            yield from response_to_items(ctx, value, cref)
            continue
        reviews = list(find_claimreviews(value))
        if not reviews:
            yield ctx.quarantine("no_claimreview", "valid JSON but no ClaimReview object in it", cref, body)
            continue
        for n, review in enumerate(reviews):
            rref = cref if len(reviews) == 1 else f"{cref}#{n}"
            yield guard_record(ctx, rref, body, lambda: claimreview_to_item(
                ctx, review, rref, json.dumps(review, ensure_ascii=False)))


def decode(data: bytes) -> str:
    """UTF-8 text (a BOM dropped); bytes that are not UTF-8 survive as surrogates, for parse_document."""
    text = data.decode("utf-8", "surrogateescape")
    return text[1:] if text.startswith("\ufeff") else text


def read_file(ctx: SourceContext, path: Path) -> Iterator[Yield]:
    """One ClaimReview file, unless the watermark says it was read unchanged before."""
    data = ctx.read_file(path)
    new, digest = ctx.file_is_new(path, data)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    yield from parse_document(ctx, decode(data), path.name)
    ctx.mark_file(path, digest)


def read(ctx: SourceContext, cfg: ClaimReviewSource) -> Iterator[Yield]:
    if is_url(cfg.location):
        ctx.files_tried += 1
        try:
            resp = fetch(cfg.location, ctx.cfg.http)
        except FetchError as exc:
            ctx.file_failed(str(exc), exc.code in TRANSIENT_FETCH_CODES)
            yield ctx.quarantine(f"fetch_{exc.code}", str(exc), cfg.location)
            return
        digest = sha256_hex(resp.body)
        if ctx.state.get("url_digest") == digest:
            ctx.counters["unchanged_files"] += 1
            return
        yield from parse_document(ctx, decode(resp.body), cfg.location)
        ctx.state["url_digest"] = digest
        return
    try:
        root = ctx.local_path(cfg.location)
    except InputRefused as exc:
        yield ctx.quarantine(exc.code, str(exc), cfg.location)
        return
    if not root.exists():
        yield ctx.quarantine("missing_location", f"{root} does not exist", cfg.location)
        return
    if not root.is_dir():
        yield from read_guarded(ctx, root, root.name, lambda: read_file(ctx, root))
        return
    for path, skip in list_folder(ctx, root):
        rel = path.relative_to(root).as_posix()
        if skip is None and path.suffix.lower() not in SUFFIXES:
            skip = "unsupported_suffix"
        if skip is None:
            yield from read_guarded(ctx, path, rel, lambda: read_file(ctx, path))
        elif skip.startswith("unreadable:"):
            yield unreadable(ctx, path, skip.removeprefix("unreadable:"), rel)
        else:
            yield from ctx.skip_file(path, skip, rel)
