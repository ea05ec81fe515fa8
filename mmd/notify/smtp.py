"""SMTP: where and how to deliver (from the environment only), the connection, and error texts
scrubbed of the password."""

from __future__ import annotations

import base64
import logging
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from typing import Mapping

from mmd.config.cycle import TlsMode

log = logging.getLogger("mmd.notify")


@dataclass
class SmtpSettings:
    """Where and how to deliver; read from the environment only (never from params)."""

    host: str
    port: int = 587
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsMode = "starttls"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "SmtpSettings | None":
        """None when MMD_SMTP_HOST is unset; ValueError for a bad port or TLS mode."""
        env = os.environ if env is None else env
        host = (env.get("MMD_SMTP_HOST") or "").strip()
        if not host:
            return None
        tls = (env.get("MMD_SMTP_TLS") or "starttls").strip().lower()
        if tls not in ("starttls", "ssl", "none"):
            raise ValueError(f"MMD_SMTP_TLS must be starttls, ssl or none (got {tls!r})")
        raw_port = (env.get("MMD_SMTP_PORT") or "").strip()
        try:
            port = int(raw_port) if raw_port else (25 if tls == "none" else 587)
        except ValueError:
            raise ValueError(f"MMD_SMTP_PORT must be a number (got {raw_port!r})") from None
        if not 0 < port < 65536:
            raise ValueError(f"MMD_SMTP_PORT out of range (got {port})")
        user = (env.get("MMD_SMTP_USER") or "").strip() or None
        password = env.get("MMD_SMTP_PASSWORD") or None
        if password is None and env.get("MMD_SMTP_PASSWORD_BLOCK"):
            password = _secret_block(env["MMD_SMTP_PASSWORD_BLOCK"])
        return cls(host=host, port=port, user=user, password=password, tls=tls)  # type: ignore[arg-type]


def _secret_block(name: str) -> str | None:
    """The password from a Prefect Secret block; any failure there just means no password."""
    try:
        from prefect.blocks.system import Secret

        value = Secret.load(name).get()
    except Exception as e:  # noqa: BLE001 - no server, no block, wrong type: all "no password"
        log.warning("SMTP password block %r could not be read (%s); going on without a password", name, type(e).__name__)
        return None
    return value if isinstance(value, str) and value else None


class _Scrub:
    """Removes the password (and its base64 forms, as AUTH would carry it) from any text."""

    def __init__(self, smtp: SmtpSettings | None):
        self.secrets: list[str] = []
        if smtp and smtp.password:
            pw = smtp.password
            self.secrets.append(pw)
            for raw in (pw, f"\0{smtp.user or ''}\0{pw}", f"{smtp.user or ''}\0{smtp.user or ''}\0{pw}"):
                self.secrets.append(base64.b64encode(raw.encode()).decode())
            self.secrets.append(repr(pw)[1:-1])
        self.secrets = sorted({s for s in self.secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text


def _describe(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _connect(smtp: SmtpSettings, timeout: float) -> smtplib.SMTP:
    if smtp.tls == "ssl":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout,
                                              context=ssl.create_default_context())
    else:
        conn = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout)
    try:
        if smtp.tls == "starttls":
            conn.ehlo()
            conn.starttls(context=ssl.create_default_context())
            conn.ehlo()
        if smtp.user:
            conn.login(smtp.user, smtp.password or "")
    except BaseException:
        conn.close()
        raise
    return conn
