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

import email
import email.policy
import email.utils
import hashlib
import json
import logging
import smtplib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Mapping, Sequence

from mmd.config.cycle import NotifyConfig
from mmd.items import now_iso
from mmd.notify.message import build_message
from mmd.notify.smtp import SmtpSettings, _connect, _describe, _Scrub
from mmd.util import atomic_write_bytes, file_lock, write_json

log = logging.getLogger(__name__)


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
    # the temporary name is not *.eml: a half-written message is never picked up
    atomic_write_bytes(path, msg.as_bytes(policy=email.policy.default), durable=True)
    return path


def _sidecar(eml: Path) -> Path:
    return eml.with_suffix(".json")


def _read_sidecar(eml: Path) -> dict:
    try:
        value = json.loads(_sidecar(eml).read_text(encoding="utf-8"))
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _locked(outbox: Path):
    """One flush at a time per outbox (no message sent twice by two flushes); False when busy."""
    return file_lock(outbox / ".lock", wait=False)


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
                key: str | None = None, text: str | None = None, links: Mapping[Path, str] | None = None) -> Delivery:
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
    msg = build_message(cfg, html_body, summary, files, key=key, text=text, links=links)
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

