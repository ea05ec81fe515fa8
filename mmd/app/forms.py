"""Request bodies, read with a cap and parsed without trusting them: URL-encoded forms, multipart uploads
(with the `multipart` package, already pinned with evidently: installing python-multipart beside it would
shadow its module), JSON."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl


class BadRequest(ValueError):
    """A request the app refuses: `code` for machines, the message for people; `status` 400 or 413."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.status = code, status


@dataclass
class Form:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[tuple[str, bytes]]] = field(default_factory=dict)   # name -> [(filename, bytes)]

    def get(self, name: str, default: str = "") -> str:
        values = self.fields.get(name)
        return values[-1] if values else default


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest("request_too_large", f"the request is {declared} bytes, over the {limit}-byte limit", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest("request_too_large", f"the request is over the {limit}-byte limit", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def parse_form(body: bytes, content_type: str) -> Form:
    """A URL-encoded or multipart form."""
    import multipart

    kind, options = multipart.parse_options_header(content_type or "")
    form = Form()
    if kind == "application/x-www-form-urlencoded":
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=1000)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest("bad_form", f"the form does not parse: {exc}") from None
        for k, v in pairs:
            form.fields.setdefault(k, []).append(v)
        return form
    if kind != "multipart/form-data" or not options.get("boundary"):
        raise BadRequest("bad_content_type", "send a form (application/x-www-form-urlencoded or multipart/form-data) "
                         "or JSON (application/json)")
    try:
        parser = multipart.MultipartParser(io.BytesIO(body), options["boundary"], content_length=len(body),
                                           part_limit=256, partsize_limit=len(body) + 1, memory_limit=len(body) + 1)
        for part in parser:
            if part.filename is not None:
                form.files.setdefault(part.name, []).append((part.filename, part.raw))
            else:
                form.fields.setdefault(part.name, []).append(part.value)
    except (multipart.MultipartError, UnicodeDecodeError) as exc:
        raise BadRequest("bad_form", f"the multipart body does not parse: {exc}") from None
    return form


def parse_json(body: bytes):
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadRequest("bad_json", f"the body is not JSON: {exc}") from None
