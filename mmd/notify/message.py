"""The cycle report as an e-mail message: the HTML body with a plain-text alternative, the attachments."""

from __future__ import annotations

import email
import email.policy
import email.utils
import hashlib
import html
import mimetypes
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Mapping, Sequence

from mmd.config.cycle import NotifyConfig
from mmd.items import now_iso

_EXTRA_TYPES = {".json": "application/json", ".html": "text/html", ".htm": "text/html", ".png": "image/png",
                ".csv": "text/csv", ".md": "text/markdown", ".parquet": "application/vnd.apache.parquet"}


def _mime_type(path: Path) -> tuple[str, str]:
    ctype = _EXTRA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    maintype, _, subtype = ctype.partition("/")
    return maintype, subtype


def _size_text(n: float) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} MB"


def _when(when: str | None) -> datetime:
    if when:
        dt = datetime.fromisoformat(when)
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(now_iso())


def _linked(note: str) -> str:
    """A left-out attachment's note as HTML, its URL (if any) a link."""
    head, sep, url = note.rpartition("; open it at ")
    if not sep:
        return html.escape(note)
    return f'{html.escape(head)}; <a href="{html.escape(url)}">open it</a>'


def _one_line(text: str) -> str:
    """Header-safe: no line breaks (they would be a header injection, and policy refuses them)."""
    return " ".join(text.split())


def build_message(cfg: NotifyConfig, html_body: str, summary: str, attachments: Sequence[Path],
                  when: str | None = None, key: str | None = None, text: str | None = None,
                  links: Mapping[Path, str] | None = None) -> EmailMessage:
    """The report: the plain-text part (`text`, else a short note), then the HTML body, then the attachments.

    Attachments that are missing, not files, over `max_attachment_bytes`, or that would take the
    attachments past `max_message_bytes` are left out and named in the plain-text part (and in a
    note at the end of the HTML, which is what most mail clients show), with the URL where they
    open when `links` has one for them. `when` (ISO time; default now) gives the Date header and
    `{date}`; `key` (what the message reports on, e.g. one gate decision) makes the Message-ID stable.
    """
    dt = _when(when)
    domain = cfg.sender.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = _one_line(cfg.subject.format(date=dt.date().isoformat(), summary=_one_line(summary)))
    msg["From"] = cfg.sender
    msg["To"] = ", ".join(cfg.to)
    msg["Date"] = email.utils.format_datetime(dt)
    msg["Message-ID"] = (f"<mmd.{hashlib.sha256(key.encode()).hexdigest()[:24]}@{domain}>" if key
                         else email.utils.make_msgid(idstring="mmd", domain=domain))
    msg["Auto-Submitted"] = "auto-generated"  # no vacation replies to the pipeline

    urls = {Path(k).resolve(): v for k, v in (links or {}).items()}
    included: list[tuple[Path, bytes]] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    total = 0
    for p in attachments:
        path = Path(p)
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        where = f"open it at {urls[key]}" if key in urls else f"on the server at {path}"
        try:
            if not path.is_file():
                skipped.append(f"{path.name}: not found")
                continue
            size = path.stat().st_size
            if size > cfg.max_attachment_bytes:
                skipped.append(f"{path.name}: {_size_text(size)}, over the {_size_text(cfg.max_attachment_bytes)} "
                               f"limit; {where}")
                continue
            if total + size > cfg.max_message_bytes:
                skipped.append(f"{path.name}: {_size_text(size)} would take the attachments past "
                               f"{_size_text(cfg.max_message_bytes)}; {where}")
                continue
            included.append((path, path.read_bytes()))
            total += size
        except OSError as e:
            skipped.append(f"{path.name}: unreadable ({type(e).__name__})")

    lines = [text.rstrip() if text and text.strip() else
             (summary.strip() or "mmd cycle report") + "\n\nThe full report is the HTML part of this message."]
    if included:
        lines += ["", "Attached:"] + [f"  - {p.name} ({_size_text(len(b))})" for p, b in included]
    if skipped:
        lines += ["", "Left out:"] + [f"  - {s}" for s in skipped]
    msg.set_content("\n".join(lines) + "\n")

    body = html_body
    if skipped:
        note = ("<hr><p><b>Attachments left out:</b></p><ul>"
                + "".join(f"<li>{_linked(s)}</li>" for s in skipped) + "</ul>")
        i = body.lower().rfind("</body>")
        body = body[:i] + note + body[i:] if i >= 0 else body + note
    msg.add_alternative(body, subtype="html")

    for path, data in included:
        maintype, subtype = _mime_type(path)
        if maintype == "text":
            try:
                msg.add_attachment(data.decode("utf-8"), subtype=subtype, filename=path.name)
                continue
            except UnicodeDecodeError:
                pass
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg
