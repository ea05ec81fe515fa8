"""HTTP for every source: http/https only, timeouts, retries with backoff on 429/5xx, a size cap."""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlparse

import requests

from mmd.config import HttpConfig

RETRY_STATUS = {429, 500, 502, 503, 504}


class FetchError(RuntimeError):
    """A fetch that did not give a usable body; `code` is a stable reason code."""

    def __init__(self, code: str, message: str, url: str):
        super().__init__(message)
        self.code = code
        self.url = url


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    content_type: str
    body: bytes


def is_url(location: str) -> bool:
    return "://" in location or location.startswith(("file:", "ftp:"))


def check_url(url: str) -> None:
    scheme = urlparse(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("bad_scheme", f"only http and https URLs are fetched, not {scheme or 'no'} scheme: {url}", url)
    if not urlparse(url).netloc:
        raise FetchError("bad_url", f"URL has no host: {url}", url)


def fetch(url: str, cfg: HttpConfig, params: dict | None = None, session: requests.Session | None = None) -> Response:
    """GET a URL within the configured limits, or raise FetchError saying why not."""
    check_url(url)
    http = session or requests.Session()
    last: FetchError | None = None
    for attempt in range(cfg.retries + 1):
        if attempt:
            time.sleep(cfg.backoff_s * (2 ** (attempt - 1)))
        try:
            with http.get(
                url,
                params=params,
                timeout=cfg.timeout_s,
                stream=True,
                headers={"User-Agent": cfg.user_agent},
                allow_redirects=True,
            ) as resp:
                check_url(resp.url)  # a redirect may not leave http(s)
                if resp.status_code in RETRY_STATUS:
                    last = FetchError(f"http_{resp.status_code}", f"{url} answered {resp.status_code}", url)
                    retry_after = resp.headers.get("Retry-After", "")
                    if retry_after.isdigit():
                        time.sleep(min(float(retry_after), 30.0))
                    continue
                if resp.status_code >= 400:
                    raise FetchError(f"http_{resp.status_code}", f"{url} answered {resp.status_code}", url)
                declared = resp.headers.get("Content-Length")
                if declared and declared.isdigit() and int(declared) > cfg.max_bytes:
                    raise FetchError("too_large", f"{url} is {declared} bytes, over the {cfg.max_bytes}-byte cap", url)
                chunks, size = [], 0
                for chunk in resp.iter_content(65_536):
                    size += len(chunk)
                    if size > cfg.max_bytes:
                        raise FetchError("too_large", f"{url} sent more than the {cfg.max_bytes}-byte cap", url)
                    chunks.append(chunk)
                return Response(resp.url, resp.status_code, resp.headers.get("Content-Type", ""), b"".join(chunks))
        except requests.exceptions.InvalidSchema:
            # requests follows redirects itself: one onto another scheme (ftp:, file:) ends here
            raise FetchError("bad_scheme", f"{url} redirected to a URL that is not http or https", url) from None
        except requests.Timeout:
            last = FetchError("timeout", f"{url} did not answer within {cfg.timeout_s}s", url)
        except requests.ConnectionError as exc:
            last = FetchError("unreachable", f"{url} could not be reached: {exc.__class__.__name__}", url)
    assert last is not None
    raise FetchError(last.code, f"{last} (after {cfg.retries + 1} attempts)", url)
