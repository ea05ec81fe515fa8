"""The cycle report by e-mail: written to an outbox first, then delivered; never lost, never failing the cycle.

The contract, in order:

1. **Outbox first.** `send_report` builds the message (HTML body with a short plain-text
   alternative, the attachments) and writes it as `<data>/<outbox>/<timestamp>-<hash>.eml`,
   atomically (a temporary file, then a rename): once the call has got that far the report
   exists on disk whatever happens to the network.
2. **Then deliver.** With `transport: smtp` and an SMTP server configured in the environment,
   every queued `.eml` is sent, oldest first (the file names sort by the time they were
   written). A delivered message moves to `<outbox>/sent/`. A message that could not be sent
   stays queued, with a sidecar `<name>.json` (`attempts`, `last_error`, `last_attempt`);
   the next cycle's `send_report` (or `flush_outbox`) sends it then. Delivery is at least
   once: a crash between the server's "250 OK" and the move to `sent/` sends it again.
3. **Never fails the cycle.** A mail failure (server down, refused login, bad settings, a
   full disk) is reported in `Delivery.errors` and logged; these functions do not raise for it.
4. **Secrets only from the environment.** Server, user and TLS mode come from `MMD_SMTP_*`
   variables, the password from `MMD_SMTP_PASSWORD` or, where that is unset and
   `MMD_SMTP_PASSWORD_BLOCK` names one, a Prefect Secret block; never from params. The password
   is not written to the `.eml`, the sidecars, the logs nor `Delivery.errors` (error texts
   are scrubbed of it).

`transport: outbox` (the embedded default) only writes the message: the outbox is then the
destination (a folder of `.eml` files any mail client opens), and nothing is an error. The
messages stay in the outbox, so switching to `smtp` later delivers them too.
"""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import hashlib
import html
import json
import logging
import mimetypes
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, field_validator

from mmd.items import now_iso
from mmd.util import file_lock, write_json

log = logging.getLogger(__name__)

TlsMode = Literal["starttls", "ssl", "none"]


class NotifyConfig(BaseModel):
    """The `notify` section: who gets the report, and how it leaves (not with which secrets)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    to: tuple[str, ...] = ("moderators@example.org",)  # the moderators' list
    sender: str = "mmd@localhost"
    subject: str = "[mmd] cycle {date}: {summary}"  # {date}, {summary} filled in
    transport: Literal["outbox", "smtp"] = "outbox"  # the embedded default writes to the outbox only
    outbox: str = "outbox"  # folder, relative to the data folder
    attach: tuple[str, ...] = ()  # extra files to attach; relative paths are under the data folder
    max_attachment_bytes: int = 15_000_000  # larger attachments are left out and listed in the body
    timeout_s: float = 10.0

    @field_validator("to")
    @classmethod
    def _some_recipients(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or not all(a.strip() for a in v):
            raise ValueError("needs at least one recipient, and no empty ones")
        return v

    @field_validator("subject")
    @classmethod
    def _subject_template(cls, v: str) -> str:
        try:
            v.format(date="2000-01-01", summary="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{date}} and {{summary}} may be filled in ({e!r})") from None
        return v

    @field_validator("max_attachment_bytes", "timeout_s")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive")
        return v


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


@dataclass
class Delivery:
    sent: list[str] = field(default_factory=list)  # message ids delivered this call (the new one and older queued ones)
    queued: list[str] = field(default_factory=list)  # message ids left in the outbox (with their last error)
    errors: list[str] = field(default_factory=list)  # human-readable reasons, scrubbed of secrets
    outbox: Path = Path("outbox")
    message_id: str | None = None  # the id of the message this call wrote (send_report only)
    path: str | None = None  # where the message this call wrote (or its earlier copy, for a known key) lies

    def to_dict(self) -> dict:
        return {"sent": list(self.sent), "queued": list(self.queued), "errors": list(self.errors),
                "outbox": str(self.outbox), "message_id": self.message_id, "path": self.path}


# --- the message -------------------------------------------------------------------------

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


def _one_line(text: str) -> str:
    """Header-safe: no line breaks (they would be a header injection, and policy refuses them)."""
    return " ".join(text.split())


def build_message(cfg: NotifyConfig, html_body: str, summary: str, attachments: Sequence[Path],
                  when: str | None = None, key: str | None = None) -> EmailMessage:
    """The report: a short plain-text part, then the HTML body, then the attachments.

    Attachments that are missing, not files, or over `max_attachment_bytes` are left out and
    named in the plain-text part (and in a note at the end of the HTML, which is what most
    mail clients show). `when` (ISO time; default now) gives the Date header and `{date}`;
    `key` (what the message reports on, e.g. one gate decision) makes the Message-ID stable.
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

    included: list[tuple[Path, bytes]] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    for p in attachments:
        path = Path(p)
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            if not path.is_file():
                skipped.append(f"{path.name}: not found")
                continue
            size = path.stat().st_size
            if size > cfg.max_attachment_bytes:
                skipped.append(f"{path.name}: {_size_text(size)}, over the {_size_text(cfg.max_attachment_bytes)} limit "
                               f"(on the server at {path})")
                continue
            included.append((path, path.read_bytes()))
        except OSError as e:
            skipped.append(f"{path.name}: unreadable ({type(e).__name__})")

    text = [summary.strip() or "mmd cycle report", "", "The full report is the HTML part of this message."]
    if included:
        text += ["", "Attached:"] + [f"  - {p.name} ({_size_text(len(b))})" for p, b in included]
    if skipped:
        text += ["", "Left out:"] + [f"  - {s}" for s in skipped]
    msg.set_content("\n".join(text) + "\n")

    body = html_body
    if skipped:
        note = ("<hr><p><b>Attachments left out:</b></p><ul>"
                + "".join(f"<li>{html.escape(s)}</li>" for s in skipped) + "</ul>")
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


# --- the outbox --------------------------------------------------------------------------

def _outbox(cfg: NotifyConfig, data_dir: Path) -> Path:
    p = Path(cfg.outbox)
    return p if p.is_absolute() else Path(data_dir) / p


def _queued(outbox: Path) -> list[Path]:
    """Queued messages, oldest first (names start with the UTC time they were written)."""
    if not outbox.is_dir():
        return []
    return sorted(p for p in outbox.glob("*.eml") if p.is_file())


def _message_id(path: Path) -> str:
    try:
        with path.open("rb") as f:
            mid = BytesHeaderParser(policy=email.policy.default).parse(f)["Message-ID"]
        return str(mid).strip() if mid else path.stem
    except (OSError, ValueError):
        return path.stem


def _digest(message_id: str) -> str:
    return hashlib.sha256(str(message_id).encode()).hexdigest()[:12]


def already_written(outbox: Path, message_id: str) -> Path | None:
    """The queued or sent file of this Message-ID, if the outbox has one."""
    for folder in (outbox, outbox / "sent"):
        for p in folder.glob(f"*-{_digest(message_id)}.eml") if folder.is_dir() else ():
            return p
    return None


def write_outbox(msg: EmailMessage, outbox: Path) -> Path:
    """`<outbox>/<UTC timestamp>-<hash of Message-ID>.eml`, atomically (tmp + rename)."""
    outbox.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    digest = _digest(msg["Message-ID"])
    path = outbox / f"{stamp}-{digest}.eml"
    tmp = outbox / f".{path.name}.tmp"  # not *.eml: a half-written file is never picked up
    with tmp.open("wb") as f:
        f.write(msg.as_bytes(policy=email.policy.default))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def _sidecar(eml: Path) -> Path:
    return eml.with_suffix(".json")


def _read_sidecar(eml: Path) -> dict:
    try:
        value = json.loads(_sidecar(eml).read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


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


def _locked(outbox: Path):
    """One flush at a time per outbox (no message sent twice by two flushes); False when busy."""
    return file_lock(outbox / ".lock", wait=False)


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


def _record_failure(eml: Path, error: str) -> None:
    state = _read_sidecar(eml)
    write_json(_sidecar(eml), {"attempts": int(state.get("attempts", 0)) + 1, "last_error": error,
                               "last_attempt": now_iso()})


def _mark_sent(eml: Path, sent_dir: Path) -> None:
    state = _read_sidecar(eml)
    sent_dir.mkdir(parents=True, exist_ok=True)
    eml.replace(sent_dir / eml.name)
    write_json(sent_dir / _sidecar(eml).name, {"attempts": int(state.get("attempts", 0)) + 1,
                                               "last_error": state.get("last_error"), "sent_at": now_iso()})
    _sidecar(eml).unlink(missing_ok=True)


def _flush(cfg: NotifyConfig, outbox: Path, env: Mapping[str, str] | None, delivery: Delivery) -> None:
    """Deliver the queue oldest first over one connection; whatever fails stays queued."""
    queue = _queued(outbox)
    if cfg.transport != "smtp" or not queue:
        return
    try:
        smtp = SmtpSettings.from_env(env)
    except ValueError as e:
        smtp, settings_error = None, f"SMTP settings: {e}"
    else:
        settings_error = None if smtp else "transport is smtp but MMD_SMTP_HOST is not set"
    if smtp is None:
        for eml in queue:
            _record_failure(eml, settings_error or "")
        delivery.errors.append(f"{settings_error}; {len(queue)} message(s) left in {outbox}")
        return
    scrub = _Scrub(smtp)
    where = f"SMTP {smtp.host}:{smtp.port} ({smtp.tls})"
    conn: smtplib.SMTP | None = None
    try:
        try:
            conn = _connect(smtp, cfg.timeout_s)
        except Exception as e:  # noqa: BLE001 - OSError, SMTPException, ssl errors: all "not now"
            error = scrub(f"{where}: {_describe(e)}")
            for eml in queue:
                _record_failure(eml, error)
            delivery.errors.append(f"{error}; {len(queue)} message(s) left in {outbox}")
            return
        for i, eml in enumerate(queue):
            mid = _message_id(eml)
            try:
                msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
            except Exception as e:  # noqa: BLE001 - unreadable file: this message only
                error = f"{eml.name}: {_describe(e)}"
                delivery.errors.append(error)
                try:
                    _record_failure(eml, error)
                except OSError:
                    pass
                continue
            try:
                refused = conn.send_message(msg)
            except Exception as e:  # noqa: BLE001
                # SMTPException is an OSError: a server that hung up or a socket error means the
                # connection is gone (this one and the rest wait for the next flush); a refusal of
                # this message (sender, recipients, data, an address it cannot carry) is this message's only
                gone = isinstance(e, smtplib.SMTPServerDisconnected) or (
                    isinstance(e, OSError) and not isinstance(e, smtplib.SMTPException))
                if not gone:
                    error = scrub(f"{where}: {mid}: {_describe(e)}")
                    _record_failure(eml, error)
                    delivery.errors.append(error)
                    continue
                error = scrub(f"{where}: {_describe(e)}")
                for rest in queue[i:]:
                    _record_failure(rest, error)
                delivery.errors.append(f"{error}; {len(queue) - i} message(s) left in {outbox}")
                conn.close()
                conn = None
                return
            if refused:
                delivery.errors.append(scrub(f"{where}: {mid}: some recipients refused: {refused}"))
            try:
                _mark_sent(eml, outbox / "sent")
            except OSError as e:  # sent, but still in the queue: it will go again (at least once)
                delivery.errors.append(f"{mid} was sent but could not be moved to sent/: {_describe(e)}")
            delivery.sent.append(mid)
            log.info("report %s sent to %s", mid, msg["To"])
    finally:
        if conn is not None:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001
                conn.close()


def flush_outbox(cfg: NotifyConfig, data_dir: Path, env: Mapping[str, str] | None = None) -> Delivery:
    """Deliver what is queued (each cycle does this first, so a message written while the
    server was down goes out then). Never raises for a mail failure."""
    outbox = _outbox(cfg, data_dir)
    delivery = Delivery(outbox=outbox)
    if not cfg.enabled:
        return delivery
    _flush_into(cfg, outbox, env, delivery)
    return delivery


def _flush_into(cfg: NotifyConfig, outbox: Path, env: Mapping[str, str] | None, delivery: Delivery) -> None:
    try:
        with _locked(outbox) as mine:
            if mine:
                _flush(cfg, outbox, env, delivery)
            else:
                delivery.errors.append(f"another delivery of {outbox} is running; the queue waits for it")
    except Exception as e:  # noqa: BLE001 - the outbox itself (a full disk, permissions): reported, not raised
        delivery.errors.append(f"outbox {outbox}: {_describe(e)}")
    delivery.queued = [_message_id(p) for p in _queued(outbox)]
    for error in delivery.errors:
        log.warning("report e-mail: %s", error)


def send_report(cfg: NotifyConfig, data_dir: Path, html_body: str, summary: str,
                attachments: Sequence[Path] = (), env: Mapping[str, str] | None = None,
                key: str | None = None) -> Delivery:
    """Write the report into the outbox, then flush the outbox (older queued messages first).

    Attachments are `cfg.attach` (relative paths under `data_dir`) and then `attachments`.
    Disabled: nothing written, an empty Delivery. Never raises for a mail failure; a message
    that cannot even be written to the outbox is still tried directly over SMTP. With a `key`,
    a report already in the outbox (queued or sent) is not written again: a cycle resumed after
    a crash, or re-run with nothing new, does not mail the same decision twice.
    """
    outbox = _outbox(cfg, data_dir)
    delivery = Delivery(outbox=outbox)
    if not cfg.enabled:
        return delivery
    files = [p if p.is_absolute() else Path(data_dir) / p for p in map(Path, cfg.attach)] + [Path(p) for p in attachments]
    msg = build_message(cfg, html_body, summary, files, key=key)
    delivery.message_id = str(msg["Message-ID"])
    try:
        if key and (earlier := already_written(outbox, delivery.message_id)):
            delivery.path = str(earlier)
            log.info("report %s is already in the outbox (%s); not written again", delivery.message_id, earlier)
        else:
            delivery.path = str(write_outbox(msg, outbox))
    except OSError as e:
        delivery.errors.append(f"could not write the report to {outbox}: {_describe(e)}")
        if cfg.transport == "smtp":
            _send_unqueued(cfg, msg, env, delivery)
    _flush_into(cfg, outbox, env, delivery)
    if delivery.path and not Path(delivery.path).exists() and (outbox / "sent" / Path(delivery.path).name).exists():
        delivery.path = str(outbox / "sent" / Path(delivery.path).name)  # delivered: it moved
    return delivery


def _send_unqueued(cfg: NotifyConfig, msg: EmailMessage, env: Mapping[str, str] | None, delivery: Delivery) -> None:
    """Last resort when the outbox is unwritable: one direct attempt, nothing kept if it fails."""
    smtp = None
    try:
        smtp = SmtpSettings.from_env(env)
        if smtp is None:
            return
        conn = _connect(smtp, cfg.timeout_s)
        try:
            conn.send_message(msg)
        finally:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001
                conn.close()
        delivery.sent.append(str(msg["Message-ID"]))
    except Exception as e:  # noqa: BLE001
        delivery.errors.append(_Scrub(smtp)(f"direct delivery of {msg['Message-ID']} failed too: {_describe(e)}; "
                                            "the report is lost"))

