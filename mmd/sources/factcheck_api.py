"""The Google Fact Check Tools API `claims:search`: filters, paging by nextPageToken.

The API key comes from the environment variable the source names, never from params.
The watermark is the newest `reviewDate` seen: a later run keeps only newer reviews.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from mmd.config import FactCheckApiSource
from mmd.http import FetchError, fetch
from mmd.items import Item, extra_json, make_item_id, normalise_text, sha256_hex
from mmd.safe_read import loads_json
from mmd.sources.base import TRANSIENT_FETCH_CODES, SourceContext, Yield, guard_record, make_item

FAMILY = "factcheck_api"


def claim_to_item(ctx: SourceContext, claim: dict, ref: str) -> Yield:
    raw = json.dumps(claim, ensure_ascii=False)
    text = claim.get("text")
    reviews = claim.get("claimReview")
    if not isinstance(text, str) or not text.strip():
        return ctx.quarantine("missing_field", "claim has no text", ref, raw)
    if len(text.encode("utf-8", "surrogatepass")) > ctx.cfg.max_text_bytes:
        return ctx.quarantine("text_too_large", f"claim text is over {ctx.cfg.max_text_bytes} bytes", ref, raw)
    if not isinstance(reviews, list) or not reviews or not isinstance(reviews[0], dict):
        return ctx.quarantine("missing_field", "claim has no claimReview", ref, raw)
    review = reviews[0]
    wording = review.get("textualRating")
    if not isinstance(wording, str) or not wording.strip():
        return ctx.quarantine("missing_field", "claimReview has no textualRating", ref, raw)
    url = review.get("url")
    publisher = review.get("publisher") if isinstance(review.get("publisher"), dict) else {}
    native = f"{url}#{sha256_hex(normalise_text(text))[:12]}" if isinstance(url, str) and url else None
    return make_item(
        ctx, ref, raw,
        {"language": "claimReview.languageCode", "url": "claimReview.url", "publisher": "claimReview.publisher.name",
         "published_at": "claimReview.reviewDate", "claim_date": "claimDate"},
        id=make_item_id("claimreview", native, text, None),  # same identity as the feed's ClaimReview
        source=ctx.name,
        source_family=FAMILY,
        kind="fact_check",
        text=text.strip(),
        native_id=native,
        label=ctx.rate(wording),
        label_original=wording,
        language=review.get("languageCode"),
        url=url,
        publisher=publisher.get("name") or publisher.get("site"),
        published_at=review.get("reviewDate"),
        claim_date=claim.get("claimDate"),
        extra=extra_json(
            claimant=claim.get("claimant"),
            title=review.get("title"),
            site=publisher.get("site"),
            other_reviews=[r.get("url") for r in reviews[1:] if isinstance(r, dict)],
        ),
    )


def response_to_items(ctx: SourceContext, page: dict, ref: str) -> Iterator[Yield]:
    """Items from one `claims:search` response page (recorded or live)."""
    claims = page.get("claims", [])
    if not isinstance(claims, list):
        yield ctx.quarantine("bad_shape", "`claims` is not a list", ref, json.dumps(page, ensure_ascii=False))
        return
    watermark = ctx.state.get("max_review_date")
    for n, claim in enumerate(claims):
        if not isinstance(claim, dict):
            yield ctx.quarantine("bad_shape", "a claim is not an object", f"{ref}#{n}", json.dumps(claim))
            continue
        cref = f"{ref}#{n}"
        result = guard_record(ctx, cref, json.dumps(claim, ensure_ascii=False), lambda: claim_to_item(ctx, claim, cref))
        if isinstance(result, Item) and isinstance(watermark, str) and result.published_at and result.published_at < watermark:
            ctx.counters["older_than_watermark"] += 1
            continue
        yield result


def read(ctx: SourceContext, cfg: FactCheckApiSource) -> Iterator[Yield]:
    key = os.environ.get(cfg.api_key_env)
    if not key:
        yield ctx.quarantine("no_api_key", f"set the API key in the environment variable {cfg.api_key_env}", cfg.endpoint)
        return
    query = {"pageSize": cfg.page_size}
    for k, v in {"query": cfg.query, "reviewPublisherSiteFilter": cfg.publisher,
                 "languageCode": cfg.language, "maxAgeDays": cfg.max_age_days}.items():
        if v is not None:
            query[k] = v
    token: str | None = None
    newest = ctx.state.get("max_review_date")
    errored = False
    for page_no in range(cfg.max_pages):
        params = dict(query, key=key, **({"pageToken": token} if token else {}))
        ref = f"{cfg.endpoint}?page={page_no}"
        ctx.files_tried += 1
        try:
            resp = fetch(cfg.endpoint, ctx.cfg.http, params=params)
        except FetchError as exc:
            # the key is in the URL the library saw: never let it reach a record
            message = str(exc).replace(key, "***")
            ctx.file_failed(message, exc.code in TRANSIENT_FETCH_CODES)
            yield ctx.quarantine(f"fetch_{exc.code}", message, ref)
            errored = True
            break
        try:
            page = loads_json(resp.body, ctx.cfg.max_json_depth)
            if not isinstance(page, dict):
                raise ValueError("top level is not an object")
        except (UnicodeDecodeError, ValueError) as exc:
            kind = resp.content_type.split(";")[0] or "unknown content type"
            yield ctx.quarantine("not_json", f"expected JSON, got {kind}: {exc}", ref, resp.body.replace(key.encode(), b"***"))
            errored = True
            break
        for result in response_to_items(ctx, page, ref):
            if isinstance(result, Item) and result.published_at and (newest is None or result.published_at > newest):
                newest = result.published_at
            yield result
        ctx.counters["pages"] += 1
        token = page.get("nextPageToken")
        if token is not None and not isinstance(token, str):
            ctx.counters["bad_next_page_token"] += 1
            token, errored = None, True
        ctx.state["next_page_token"] = token
        if not token:
            break
    # a run that broke off part-way (an error, or max_pages with a token left) must not
    # move the watermark past pages it never read
    if newest and not errored and not token:
        ctx.state["max_review_date"] = newest
