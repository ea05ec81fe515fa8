"""ClaimReview fact-checks: the Data Commons feed, plain JSON / JSON-LD, and HTML pages.

Formats are sniffed per document:
- lines of `<script type="application/ld+json">{…}</script>` (the Data Commons feed),
- an HTML page with such script blocks anywhere in it,
- JSON / JSON-LD: a single object, a list, or an `@graph` (nested ones too),
- JSON lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from mmd.config import ClaimReviewSource
from mmd.http import FetchError, fetch, is_url
from mmd.items import Item, extra_json, make_item_id, normalise_text, sha256_hex
from mmd.sources.base import SourceContext, Yield

FAMILY = "claimreview"
SUFFIXES = {".json", ".jsonld", ".jsonl", ".html", ".htm", ".txt"}
_SCRIPT = re.compile(
    r"<script[^>]*type\s*=\s*[\"']application/ld\+json[\"'][^>]*>(.*?)</script\s*>", re.I | re.S
)


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


def split_documents(text: str) -> tuple[list[tuple[str, str]], str]:
    """Cut a document into (ref suffix, JSON text) chunks, and name the format found."""
    scripts = [(m.group(1), text.count("\n", 0, m.start()) + 1) for m in _SCRIPT.finditer(text)]
    if scripts:
        return [(f"line {line}", body.strip()) for body, line in scripts], "ld+json scripts"
    stripped = text.lstrip()
    if stripped.startswith("<"):
        return [], "html without ld+json"
    try:
        json.loads(text)
        return [("document", text)], "json"
    except json.JSONDecodeError:
        pass
    lines = [(f"line {i}", ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if len(lines) > 1:
        return lines, "json lines"
    return [("document", text)], "json"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("name") or value.get("@value")
    if isinstance(value, list):
        value = value[0] if value else None
        return _text(value)
    s = str(value).strip()
    return s or None


def claimreview_to_item(ctx: SourceContext, review: dict, ref: str, raw: str) -> Yield:
    """Map one ClaimReview object onto an item, or say why it cannot be one."""
    claim = _text(review.get("claimReviewed"))
    rating = review.get("reviewRating")
    if not claim:
        return ctx.quarantine("missing_field", "ClaimReview has no claimReviewed", ref, raw)
    if len(claim.encode("utf-8")) > ctx.cfg.max_text_bytes:
        return ctx.quarantine("text_too_large", f"claimReviewed is over {ctx.cfg.max_text_bytes} bytes", ref, raw)
    if not isinstance(rating, dict):
        return ctx.quarantine("missing_field", "ClaimReview has no reviewRating", ref, raw)
    wording = _text(rating.get("alternateName")) or _text(rating.get("name"))
    if wording is None:
        return ctx.quarantine("missing_field", "reviewRating has no alternateName or name", ref, raw)
    url = _text(review.get("url"))
    reviewed = review.get("itemReviewed") if isinstance(review.get("itemReviewed"), dict) else {}
    native = f"{url}#{sha256_hex(normalise_text(claim))[:12]}" if url else None
    item = Item(
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
    return item.finalise()


def parse_document(ctx: SourceContext, text: str, ref: str) -> Iterator[Yield]:
    """Every item (or quarantine record) in one ClaimReview document."""
    chunks, fmt = split_documents(text)
    if not chunks:
        yield ctx.quarantine("no_claimreview", f"no ClaimReview found ({fmt})", ref, text)
        return
    for where, body in chunks:
        cref = f"{ref}:{where}"
        try:
            value = json.loads(body)
        except json.JSONDecodeError as exc:
            yield ctx.quarantine("bad_json", f"not valid JSON: {exc.msg} at char {exc.pos}", cref, body)
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
            yield claimreview_to_item(ctx, review, cref if len(reviews) == 1 else f"{cref}#{n}", json.dumps(review, ensure_ascii=False))


def read_bytes_as_text(ctx: SourceContext, data: bytes, ref: str) -> str | Yield:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return ctx.quarantine("not_utf8", f"not UTF-8 text ({exc.reason} at byte {exc.start})", ref, data)


def read_file(ctx: SourceContext, path: Path) -> Iterator[Yield]:
    """One ClaimReview file, unless the watermark says it was read unchanged before."""
    data = path.read_bytes()
    new, digest = ctx.file_is_new(path, data)
    if not new:
        ctx.counters["unchanged_files"] += 1
        return
    text = read_bytes_as_text(ctx, data, str(path))
    if isinstance(text, str):
        yield from parse_document(ctx, text, path.name)
    else:
        # a file that is not UTF-8 may still hold good lines: parse those, quarantine the rest
        good: list[str] = []
        for lineno, raw in enumerate(data.splitlines(), 1):
            try:
                good.append(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                good.append("")
                yield ctx.quarantine("not_utf8", f"line is not UTF-8 ({exc.reason} at byte {exc.start})", f"{path.name}:line {lineno}", raw)
        yield from parse_document(ctx, "\n".join(good), path.name)
    ctx.mark_file(path, digest)


def read(ctx: SourceContext, cfg: ClaimReviewSource) -> Iterator[Yield]:
    if is_url(cfg.location):
        try:
            resp = fetch(cfg.location, ctx.cfg.http)
        except FetchError as exc:
            yield ctx.quarantine(f"fetch_{exc.code}", str(exc), cfg.location)
            return
        digest = sha256_hex(resp.body)
        if ctx.state.get("url_digest") == digest:
            ctx.counters["unchanged_files"] += 1
            return
        text = read_bytes_as_text(ctx, resp.body, cfg.location)
        if not isinstance(text, str):
            yield text
            return
        yield from parse_document(ctx, text, cfg.location)
        ctx.state["url_digest"] = digest
        return
    root = ctx.settings.path(cfg.location)
    if not root.exists():
        yield ctx.quarantine("missing_location", f"{root} does not exist", cfg.location)
        return
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES) if root.is_dir() else [root]
    for path in files:
        yield from read_file(ctx, path)
