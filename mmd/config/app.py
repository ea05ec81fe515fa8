"""The moderators' sections: the review queue (`review:`, read by the review stage and, for the agreement
rule, by ingest) and the web app (`app:`, read by `mmd app` only). Secrets are never here: accounts,
API tokens and the cookie key come from the environment variables these sections name."""

from __future__ import annotations

from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class ReviewConfig(_Strict):
    """What a cycle puts in front of moderators (`<data>/review/queue.parquet`)."""

    # fresh items that join the queue per cycle: the most likely harmful / false first, then the most
    # uncertain (mean champion score nearest 0.5, or the champions disagreeing most)
    size: int = Field(50, ge=0)
    likely_share: float = Field(0.5, ge=0, le=1)   # share of `size` taken by the highest score
    # a label trains (and overrides a source's label) only when this many moderators gave it
    require_agreement: int = Field(1, ge=1, le=10)
    skip_labelled: bool = False     # leave out items their source already labelled (a verdict, a dataset label)


class AppConfig(_Strict):
    """`mmd app`: the moderators' web app and the scoring API."""

    base_url: str = "http://127.0.0.1:8080"   # where people and e-mails reach it; `mmd app` listens on its port
    session_hours: float = Field(12, gt=0)
    page_size: int = Field(50, gt=0, le=500)  # queue items on one page
    neighbours: int = Field(5, ge=0, le=50)   # nearest labelled items /api/score returns
    max_batch: int = Field(64, gt=0, le=1024)  # items in one /api/score request
    max_request_bytes: int = Field(64_000_000, gt=0)   # a larger /api/score body is refused (413)
    # image URLs resolving to loopback, private or link-local addresses are refused unless this is true
    allow_private_urls: bool = False
    users_env: str = "MMD_APP_USERS"          # "alice:<hash>,bob:<hash>" (`mmd app hash-password`)
    tokens_env: str = "MMD_APP_TOKENS"        # "ci:<token>,...": bearer tokens for the API
    secret_env: str = "MMD_APP_SECRET"        # the key that signs session cookies (random per process if unset)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"base_url must be an http(s) URL with a host, got {v!r}")
        return v.rstrip("/")

    @property
    def port(self) -> int:
        u = urlparse(self.base_url)
        return u.port or (443 if u.scheme == "https" else 80)
