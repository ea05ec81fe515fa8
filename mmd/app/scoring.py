"""The scoring service behind `POST /api/score`: each champion's score of a text and picture, the version
that gave it, and the nearest labelled items in the store.

- The champions are looked up in the registry on every request (a file read) and their predictors cached
  by version and digest, so a newly promoted champion serves from the next request, no restart.
- Pictures are checked exactly as ingest checks them (`mmd.images.check_image`, `ingest.images` caps:
  bytes, pixels, sides, format, truncation); an image URL is fetched with ingest's limits (`mmd.http`,
  http(s) only, the byte cap, a timeout) and, unless `app.allow_private_urls`, refused when it resolves
  to a loopback, private or link-local address, at every redirect.
- The embedded vector store admits one open store per folder: the app opens it only while a request needs
  it (one at a time, under a lock), and not at all while a cycle holds the cycle lock, so it never makes
  a stage fail; RKC and the neighbours then say they are unavailable and the other scores still come.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import ipaddress
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from mmd.app.forms import BadRequest, Form
from mmd.config import Settings

EXT = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}


class StoreUnavailable(RuntimeError):
    """The vector store cannot be opened now (a cycle holds it)."""


@dataclass
class ScoreInput:
    text: str                 # empty until OCR reads it from the picture (`ingest.ocr`), for a picture sent alone
    image: bytes | None = None
    origin: str = ""          # the upload's name or the URL, for messages
    text_source: str = "request"


# --------------------------------------------------------------------------- input
class _PublicOnly:
    """A requests session that refuses hosts resolving to non-public addresses, at every hop."""

    def __new__(cls):
        import requests

        from mmd.http import FetchError

        class Session(requests.Session):
            def send(self, request, **kwargs):
                host = urlparse(request.url).hostname or ""
                try:
                    infos = socket.getaddrinfo(host, None)
                except socket.gaierror:
                    raise FetchError("unreachable", f"{host} does not resolve", request.url) from None
                for info in infos:
                    ip = ipaddress.ip_address(info[4][0].split("%")[0])
                    ip = getattr(ip, "ipv4_mapped", None) or ip
                    if not ip.is_global or ip.is_multicast:
                        raise FetchError("private_address", f"{host} resolves to {ip}, a non-public address",
                                         request.url)
                return super().send(request, **kwargs)

        return Session()


def fetch_image(settings: Settings, url: str) -> bytes:
    """An image URL's bytes within ingest's limits, or BadRequest saying why not."""
    from mmd.http import FetchError, fetch

    p = settings.params
    cfg = p.ingest.http.model_copy(update={"max_bytes": min(p.ingest.http.max_bytes, p.ingest.images.max_bytes),
                                           "retries": min(p.ingest.http.retries, 1)})
    session = None if p.app.allow_private_urls else _PublicOnly()
    try:
        return fetch(url, cfg, session=session).body
    except FetchError as exc:
        if exc.code == "too_large":
            raise BadRequest("image_too_large", f"image_url: {exc}") from None
        if exc.code in ("bad_scheme", "bad_url", "private_address"):
            raise BadRequest("url_refused", f"image_url refused: {exc}") from None
        raise BadRequest("url_failed", f"image_url could not be fetched: {exc}") from None


def check_picture(settings: Settings, data: bytes, where: str) -> str:
    """The checked picture's file suffix, or BadRequest (image_too_large, not_an_image, bad_image)."""
    from mmd.images import ImageRejected, check_image

    try:
        _, _, fmt = check_image(data, settings.params.ingest.images)
    except ImageRejected as exc:
        code = {"image_too_large": "image_too_large", "image_too_many_pixels": "image_too_large",
                "image_not_an_image": "not_an_image", "image_empty": "not_an_image"}.get(exc.code, "bad_image")
        raise BadRequest(code, f"{where}: {exc}") from None
    return EXT.get(fmt, ".img")


def _item(settings: Settings, obj, where: str) -> ScoreInput:
    if not isinstance(obj, dict):
        raise BadRequest("bad_item", f"{where}: an item is an object with `text` (and `image_url` or `image_base64`)")
    text = obj.get("text")
    pictured = bool(obj.get("image_url") or obj.get("image_base64"))
    blank = text is None or (isinstance(text, str) and not text.strip())
    if blank and pictured and settings.params.ingest.ocr.enabled:
        text = ""  # read from the picture once it is checked (parse_inputs)
    elif not isinstance(text, str) or not text.strip():
        raise BadRequest("no_text", f"{where}: no text: every item needs a non-empty `text`"
                         + (" (or a picture whose text OCR reads)" if settings.params.ingest.ocr.enabled else ""))
    if obj.get("image_url") and obj.get("image_base64"):
        raise BadRequest("bad_item", f"{where}: give `image_url` or `image_base64`, not both")
    image = None
    if obj.get("image_url"):
        if not isinstance(obj["image_url"], str):
            raise BadRequest("url_refused", f"{where}: image_url must be a string")
        image = fetch_image(settings, obj["image_url"])
    elif obj.get("image_base64"):
        try:
            image = base64.b64decode(str(obj["image_base64"]), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("not_an_image", f"{where}: image_base64 is not base64") from None
    return ScoreInput(text.strip(), image, str(obj.get("image_url") or "image_base64"))


def parse_inputs(settings: Settings, body, form: Form | None = None) -> list[ScoreInput]:
    """A JSON body ({text, image_url | image_base64} or {"items": [...]}) or a multipart form (text, an
    `image` upload or `image_url`) -> checked inputs, or BadRequest with the reason."""
    if form is not None:
        uploads = form.files.get("image") or []
        if len(uploads) > 1:
            raise BadRequest("bad_item", "one `image` per request: send a JSON list of items for a batch")
        obj = {"text": form.get("text"), "image_url": form.get("image_url") or None}
        alone = not obj["text"] and bool(uploads) and settings.params.ingest.ocr.enabled  # text read by OCR below
        item = (_item(settings, {k: v for k, v in obj.items() if v}, "the form") if obj["text"] or obj["image_url"]
                else ScoreInput("") if alone else None)
        if item is None:
            raise BadRequest("no_text", "no text: the form needs a non-empty `text` field")
        if uploads:
            if item.image is not None:
                raise BadRequest("bad_item", "give an `image` upload or `image_url`, not both")
            item.image, item.origin = uploads[0][1], uploads[0][0] or "image"
        inputs = [item]
    elif isinstance(body, dict) and "items" in body:
        if not isinstance(body["items"], list) or not body["items"]:
            raise BadRequest("bad_item", "`items` must be a non-empty list")
        if len(body["items"]) > settings.params.app.max_batch:
            raise BadRequest("batch_too_large", f"{len(body['items'])} items: at most {settings.params.app.max_batch} "
                             "per request (app.max_batch)")
        inputs = [_item(settings, obj, f"item {n}") for n, obj in enumerate(body["items"])]
    else:
        inputs = [_item(settings, body, "the request")]
    for n, item in enumerate(inputs):
        where = f"item {n} ({item.origin})" if len(inputs) > 1 else item.origin or "the picture"
        if item.image is not None:
            check_picture(settings, item.image, where)
        if not item.text:
            read_picture_text(settings, item, where)
    return inputs


def read_picture_text(settings: Settings, item: ScoreInput, where: str) -> None:
    """A picture sent without text: its text as OCR reads it, as ingest does for a record without text."""
    from mmd.ocr import OcrUnavailable, read_text

    if item.image is None:
        raise BadRequest("no_text", f"{where}: no text: every item needs a non-empty `text`")
    try:
        read = read_text(item.image, settings.params.ingest.ocr)
    except OcrUnavailable as exc:
        raise BadRequest("no_text", f"{where}: no text, and OCR is unavailable: {exc}") from None
    if read is None:
        raise BadRequest("no_text", f"{where}: no text, and OCR read none in the picture: send its `text`")
    item.text, item.text_source = read.text, "ocr"


# --------------------------------------------------------------------------- the service
def cycle_running(settings: Settings) -> bool:
    """Does a cycle (or the ingest flow) hold the cycle lock right now? A probe that takes nothing."""
    path = settings.layout.cycle_lock
    if not path.exists():
        return False
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


class ScoringService:
    """The champions, cached by version; the encoder; the store, one request at a time."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.lock = threading.RLock()
        self._models: dict[str, tuple[tuple, object]] = {}
        self._encoder = None
        self._indexed = False

    def champions(self) -> dict:
        from mmd.review.queue import champions

        return champions(self.settings)

    def predictor(self, family: str, version):
        """The champion's predictor, loaded once per version (a promotion is picked up at the next request)."""
        from mmd.models.serving import load_predictor

        key = (version.number, version.digest)
        with self.lock:
            cached = self._models.get(family)
            if cached is None or cached[0] != key:
                self._models[family] = (key, load_predictor(self.settings, family, version.path))
            return self._models[family][1]

    def encoder(self):
        from mmd.encoders import build_encoder

        with self.lock:
            if self._encoder is None:
                self._encoder = build_encoder(self.settings.params.embed, self.settings.root)
            return self._encoder

    def exclusive(self, fn, uses_store: bool = True):
        """fn() one request at a time; when it opens the store, never while a cycle runs (StoreUnavailable),
        and retried while another process (`mmd search`, `mmd label add`) holds the store a moment."""
        from mmd.store import StoreError

        with self.lock:
            last = None
            for _ in range(10):
                if uses_store and cycle_running(self.settings):
                    raise StoreUnavailable("a cycle is running and uses the vector store: RKC and the nearest "
                                           "items are back when it ends")
                try:
                    return fn()
                except StoreError as exc:
                    if "open elsewhere" not in str(exc):
                        raise
                    last = exc
                    time.sleep(0.3)
            raise StoreUnavailable(f"the vector store is busy: {last}")

    def score(self, inputs: list[ScoreInput]) -> dict:
        """Each champion's score of each input, and its nearest labelled items (see the module docstring)."""
        champs = self.champions()
        results = [{"index": n, "text": x.text[:200], "text_source": x.text_source, "has_image": x.image is not None,
                    "scores": {}, "neighbours": []} for n, x in enumerate(inputs)]
        notes: list[str] = []
        with tempfile.TemporaryDirectory(prefix="mmd-score-") as tmp:
            rows = []
            for n, x in enumerate(inputs):
                rel = None
                if x.image is not None:
                    rel = f"q{n}{check_picture(self.settings, x.image, x.origin)}"
                    (Path(tmp) / rel).write_bytes(x.image)
                rows.append({"id": f"query-{n}", "text": x.text, "image_path": rel})
            for family, version in champs.items():
                predictor = self.predictor(family, version)
                info = {"version": version.number, "variant": predictor.variant,
                        "trained_at": predictor.meta.get("trained_at")}
                try:
                    scores, has_image = self.exclusive(lambda: predictor.score(rows, Path(tmp)), _uses_store(family))
                except StoreUnavailable as exc:
                    notes.append(f"{family}: {exc}")
                    for r in results:
                        r["scores"][family] = {**info, "score": None, "error": str(exc)}
                    continue
                for r, s, h in zip(results, scores, has_image):
                    r["scores"][family] = {**info, "score": round(float(s), 6)}
                    r["has_image"] = bool(h)
            k = self.settings.params.app.neighbours
            if k and not self.settings.layout.vectors.exists():
                notes.append("neighbours: no items are embedded yet (`mmd embed`, `mmd index`)")
            elif k:
                from mmd.store import StoreError

                try:
                    for r, hits in zip(results, self.neighbours(rows, Path(tmp), k)):
                        r["neighbours"] = hits
                except (StoreUnavailable, StoreError, ValueError, OSError) as exc:
                    notes.append(f"neighbours: {exc}")
        return {"models": {f: v.number for f, v in champs.items()}, "results": results,
                **({"notes": notes} if notes else {}),
                **({} if champs else {"note": "no champion in service yet: run a cycle (or `mmd promote`)"})}

    def query_vectors(self, rows: list[dict], data_dir: Path) -> np.ndarray:
        """The mixed vectors of rows, made as the items' own are (`mmd.search.query_vector`)."""
        from PIL import Image

        from mmd.encoders import mix

        enc, cfg = self.encoder(), self.settings.params.embed
        text = enc.encode_texts([r["text"] for r in rows])
        image = np.zeros((len(rows), enc.image_dim), np.float32)
        has = np.array([bool(r.get("image_path")) for r in rows])
        if has.any():
            pictures = []
            for r in rows:
                if r.get("image_path"):
                    with Image.open(data_dir / r["image_path"]) as img:
                        pictures.append(img.convert("RGB"))
            image[has] = enc.encode_images(pictures)
        return mix(text, image, has, cfg.text_weight)

    def neighbours(self, rows: list[dict], data_dir: Path, k: int) -> list[list[dict]]:
        """The k nearest labelled items of each row (a moderators' agreed label counts, and wins)."""
        from mmd.app.catalog import item_catalog
        from mmd.index import ensure_indexed

        from mmd.store import open_store

        vectors = self.query_vectors(rows, data_dir)
        catalog = item_catalog(self.settings)

        def search():
            with open_store(self.settings) as store:
                if not self._indexed:  # a store wiped since the index stage comes back from the files, once
                    ensure_indexed(self.settings, store)
                    self._indexed = True
                return store.search_batch(self.settings.params.index.items_collection, vectors, k=min(4 * k, 200))

        hits = self.exclusive(search)
        out = []
        for found in hits:
            near = []
            for h in found:
                item = catalog.get(h.id)
                if item is None or item["label"] is None:
                    continue
                near.append({"id": h.id, "similarity": round(float(h.score), 4), "label": item["label"],
                             "label_by": item["label_by"], "kind": item["kind"], "source": item["source"],
                             "text": (item["text"] or "")[:200]})
            out.append(near[:k])
        return out

    def item_score(self, family: str, row: dict) -> tuple[int, float] | None:
        """(version, score) of one stored item by the family's champion; None when there is none."""
        version = self.champions().get(family)
        if version is None:
            return None
        predictor = self.predictor(family, version)
        scores, _ = self.exclusive(lambda: predictor.score([row], self.settings.data_dir), _uses_store(family))
        return version.number, float(scores[0])


def _uses_store(family: str) -> bool:
    """A family that reads the `index` section scores through the vector store (RGCL's RKC)."""
    from mmd.models.families import get

    return "index" in get(family).reads
