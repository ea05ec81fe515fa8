"""The cycle report by e-mail, against a real SMTP server (aiosmtpd on 127.0.0.1), no mocks."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from mmd.notify import Delivery, NotifyConfig, SmtpSettings, build_message, flush_outbox, send_report

PASSWORD = "hunter2-secret"
HTML = "<html><body><h1>Cycle report</h1><p>text_clip: promoted</p></body></html>"


class Sink:
    """Stores what arrives."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.envelopes.append(envelope)
        return "250 OK"

    def messages(self) -> list[email.message.EmailMessage]:
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def server(port):
    """Start a server on `port` (plain SMTP, optional AUTH); stopped at the end."""
    started: list[Controller] = []

    def _start(sink: Sink | None = None, **kwargs) -> Sink:
        sink = sink or Sink()
        c = Controller(sink, hostname="127.0.0.1", port=port, **kwargs)
        c.start()
        started.append(c)
        return sink

    yield _start
    for c in started:
        c.stop()


def smtp_env(port: int, **extra: str) -> dict[str, str]:
    return {"MMD_SMTP_HOST": "127.0.0.1", "MMD_SMTP_PORT": str(port), "MMD_SMTP_TLS": "none", **extra}


def cfg(**kw) -> NotifyConfig:
    return NotifyConfig(**({"transport": "smtp", "to": ("mods@example.org", "lead@example.org"), "timeout_s": 5.0} | kw))


def all_outbox_text(outbox: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in outbox.rglob("*") if p.is_file())


def test_report_with_attachment_arrives(tmp_path, port, server):
    sink = server()
    drift = tmp_path / "drift.html"
    drift.write_text("<html><body>drift: PSI 0.31 on image embeddings</body></html>")
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"auroc": 0.91}')

    d = send_report(cfg(), tmp_path, HTML, "text_clip promoted", [drift, metrics], env=smtp_env(port))

    assert d.errors == [] and d.queued == [] and d.sent == [d.message_id]
    assert len(sink.envelopes) == 1
    env = sink.envelopes[0]
    assert env.rcpt_tos == ["mods@example.org", "lead@example.org"] and env.mail_from == "mmd@localhost"
    msg = sink.messages()[0]
    assert "text_clip promoted" in msg["Subject"] and msg["Subject"].startswith("[mmd] cycle ")
    assert msg["Message-ID"] == d.message_id and msg["Date"]
    assert msg.get_body(("plain",)).get_content().startswith("text_clip promoted")
    assert "<h1>Cycle report</h1>" in msg.get_body(("html",)).get_content()
    # the plain-text alternative comes first, the HTML after it
    alt = next(p for p in msg.walk() if p.get_content_type() == "multipart/alternative")
    assert [p.get_content_type() for p in alt.iter_parts()] == ["text/plain", "text/html"]
    parts = {a.get_filename(): a for a in msg.iter_attachments()}
    assert set(parts) == {"drift.html", "metrics.json"}
    assert parts["drift.html"].get_content_type() == "text/html"
    assert "PSI 0.31" in parts["drift.html"].get_content()
    assert parts["metrics.json"].get_content_type() == "application/json"
    assert json.loads(parts["metrics.json"].get_content()) == {"auroc": 0.91}
    # the outbox copy moved to sent/, the queue is empty
    outbox = tmp_path / "outbox"
    assert list(outbox.glob("*.eml")) == [] and len(list((outbox / "sent").glob("*.eml"))) == 1
    assert d.to_dict()["sent"] == [d.message_id]


def test_server_down_then_delivered_next_time_oldest_first(tmp_path, port, server):
    env = smtp_env(port)  # nothing listens there yet
    first = send_report(cfg(), tmp_path, HTML, "cycle one", env=env)
    assert first.sent == [] and first.queued == [first.message_id]
    assert first.errors and "127.0.0.1" in first.errors[0]
    emls = list((tmp_path / "outbox").glob("*.eml"))
    assert len(emls) == 1
    side = json.loads(emls[0].with_suffix(".json").read_text())
    assert side["attempts"] == 1 and "refused" in side["last_error"].lower() and side["last_attempt"]

    second = send_report(cfg(), tmp_path, HTML, "cycle two", env=env)  # still down
    assert second.queued == [first.message_id, second.message_id]
    assert json.loads(emls[0].with_suffix(".json").read_text())["attempts"] == 2

    sink = server()
    flushed = flush_outbox(cfg(), tmp_path, env=env)
    assert flushed.errors == [] and flushed.queued == []
    assert flushed.sent == [first.message_id, second.message_id]
    assert [m["Subject"].split(": ", 1)[1] for m in sink.messages()] == ["cycle one", "cycle two"]
    outbox = tmp_path / "outbox"
    assert list(outbox.glob("*.eml")) == [] and list(outbox.glob("*.json")) == []
    sent_side = json.loads((outbox / "sent" / emls[0].with_suffix(".json").name).read_text())
    assert sent_side["attempts"] == 3 and sent_side["sent_at"]

    third = send_report(cfg(), tmp_path, HTML, "cycle three", env=env)
    assert third.sent == [third.message_id] and len(sink.envelopes) == 3


class RefusePoison(Sink):
    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if b"poison" in envelope.content:
            return "554 5.6.0 not this one"
        return await super().handle_DATA(server, session, envelope)


def test_refused_message_stays_queued_others_go(tmp_path, port, server):
    env = smtp_env(port)
    bad = send_report(cfg(), tmp_path, HTML, "poison", env=env)  # server down: both queued
    good = send_report(cfg(), tmp_path, HTML, "fine", env=env)
    sink = server(RefusePoison())
    d = flush_outbox(cfg(), tmp_path, env=env)
    assert d.sent == [good.message_id] and d.queued == [bad.message_id]
    assert len(d.errors) == 1 and "554" in d.errors[0] and bad.message_id in d.errors[0]
    assert [m["Subject"].split(": ", 1)[1] for m in sink.messages()] == ["fine"]
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    assert json.loads(eml.with_suffix(".json").read_text())["attempts"] == 3


def test_outbox_transport_writes_only(tmp_path, port, server):
    sink = server()
    d = send_report(NotifyConfig(), tmp_path, HTML, "held", env=smtp_env(port))
    assert d.errors == [] and d.sent == [] and d.queued == [d.message_id]
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    assert not eml.with_suffix(".json").exists() and sink.envelopes == []
    msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert msg["To"] == "moderators@example.org" and "held" in msg["Subject"]


def test_smtp_without_host_keeps_it_queued(tmp_path):
    d = send_report(cfg(), tmp_path, HTML, "no server", env={})
    assert d.queued == [d.message_id] and d.sent == []
    assert d.errors and "MMD_SMTP_HOST" in d.errors[0]


class Echo(Sink):
    """Accepts the login, then refuses the data with a reply that quotes the password back."""

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        return f"554 refused, your password is {PASSWORD}"


AUTH_NO_TLS = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@AUTH_NO_TLS
@pytest.mark.parametrize("auth", ["unsupported", "rejected", "echoed"])
def test_password_never_written_nor_reported(tmp_path, port, server, auth):
    if auth == "rejected":
        server(authenticator=lambda *a: AuthResult(success=False, handled=False),
               auth_required=True, auth_require_tls=False)
    elif auth == "echoed":  # the server's error text carries the password: scrubbed from errors and sidecars
        server(Echo(), authenticator=lambda *a: AuthResult(success=True),
               auth_required=True, auth_require_tls=False)
    else:
        server()  # no AUTH advertised: the login fails before any password is sent
    env = smtp_env(port, MMD_SMTP_USER="mmd", MMD_SMTP_PASSWORD=PASSWORD)
    d = send_report(cfg(), tmp_path, HTML, "secret test", env=env)
    assert d.sent == [] and d.queued == [d.message_id] and d.errors
    assert PASSWORD not in json.dumps(d.to_dict()) and PASSWORD not in repr(d)
    assert PASSWORD not in all_outbox_text(tmp_path / "outbox")
    assert PASSWORD not in repr(SmtpSettings.from_env(env))
    if auth == "echoed":
        assert "554" in d.errors[0] and "***" in d.errors[0]


@AUTH_NO_TLS
def test_login_with_password_sends(tmp_path, port, server):
    seen: list = []

    def accept(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)

    sink = server(authenticator=accept, auth_required=True, auth_require_tls=False)
    env = smtp_env(port, MMD_SMTP_USER="mmd", MMD_SMTP_PASSWORD=PASSWORD)
    d = send_report(cfg(), tmp_path, HTML, "authenticated", env=env)
    assert d.errors == [] and d.sent == [d.message_id] and len(sink.envelopes) == 1
    assert seen == [(b"mmd", PASSWORD.encode())]
    assert PASSWORD not in all_outbox_text(tmp_path / "outbox")


def test_oversized_and_missing_attachments_listed(tmp_path):
    big = tmp_path / "drift_big.html"
    big.write_bytes(b"x" * 2000)
    small = tmp_path / "ok.png"
    small.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)
    msg = build_message(NotifyConfig(max_attachment_bytes=1000), HTML, "s", [big, small, tmp_path / "gone.json"],
                        when="2026-03-01T12:00:00+00:00")
    names = [a.get_filename() for a in msg.iter_attachments()]
    assert names == ["ok.png"]
    assert next(msg.iter_attachments()).get_content_type() == "image/png"
    text = msg.get_body(("plain",)).get_content()
    assert "drift_big.html" in text and "limit" in text and "gone.json" in text and "on the server at" in text
    assert "drift_big.html" in msg.get_body(("html",)).get_content()
    assert msg["Subject"] == "[mmd] cycle 2026-03-01: s" and "1 Mar 2026 12:00:00" in msg["Date"]


def test_pages_over_the_caps_are_linked_and_the_text_part_is_the_report(tmp_path):
    pages = {name: tmp_path / name for name in ("gate.json", "embeddings.html", "data.html", "predictions.html")}
    for (name, path), size in zip(pages.items(), (300, 700, 5000, 800)):
        path.write_bytes(b"x" * size)
    links = {path: f"https://mmd.example.org/reports/file/{name}" for name, path in pages.items()}
    cfg = NotifyConfig(max_attachment_bytes=1000, max_message_bytes=1500)
    msg = build_message(cfg, HTML, "cmc hold", list(pages.values()), text="CMC: failed -> hold\n  - floors\n",
                        links=links)
    # gate.json and the embedding page fit; data.html is over the per-file cap; predictions.html would pass the total
    assert [a.get_filename() for a in msg.iter_attachments()] == ["gate.json", "embeddings.html"]
    text = msg.get_body(("plain",)).get_content()
    assert text.startswith("CMC: failed -> hold\n  - floors")
    assert "data.html: 5.0 kB, over the 1.0 kB limit; open it at https://mmd.example.org/reports/file/data.html" in text
    assert "predictions.html: 800 B would take the attachments past 1.5 kB; open it at " \
           "https://mmd.example.org/reports/file/predictions.html" in text
    page = msg.get_body(("html",)).get_content()
    assert '<a href="https://mmd.example.org/reports/file/data.html">open it</a>' in page


def test_disabled_writes_nothing(tmp_path, port):
    d = send_report(NotifyConfig(enabled=False, transport="smtp"), tmp_path, HTML, "x", env=smtp_env(port))
    assert d == Delivery(outbox=tmp_path / "outbox") and not (tmp_path / "outbox").exists()
    assert flush_outbox(NotifyConfig(enabled=False), tmp_path).to_dict()["queued"] == []


def test_settings_from_env():
    assert SmtpSettings.from_env({}) is None
    s = SmtpSettings.from_env({"MMD_SMTP_HOST": "mail.example.org"})
    assert (s.port, s.tls, s.user, s.password) == (587, "starttls", None, None)
    assert SmtpSettings.from_env({"MMD_SMTP_HOST": "h", "MMD_SMTP_TLS": "none"}).port == 25
    with pytest.raises(ValueError):
        SmtpSettings.from_env({"MMD_SMTP_HOST": "h", "MMD_SMTP_TLS": "tls13"})
    with pytest.raises(ValueError):
        NotifyConfig(subject="{cycle}")


def test_subject_cannot_inject_headers(tmp_path):
    msg = build_message(NotifyConfig(), HTML, "ok\r\nBcc: evil@example.org", [])
    assert msg["Bcc"] is None and "\n" not in msg["Subject"]


def test_a_report_with_a_key_is_written_once_and_sent_once(tmp_path, port, server):
    """The same decision mailed again (a resumed cycle, a rerun with nothing new) is neither queued nor sent twice."""
    sink = server()
    first = send_report(cfg(), tmp_path, HTML, "cmc promote", env=smtp_env(port), key="cycle-1")
    again = send_report(cfg(), tmp_path, HTML, "cmc promote", env=smtp_env(port), key="cycle-1")
    other = send_report(cfg(), tmp_path, HTML, "cmc hold", env=smtp_env(port), key="cycle-2")
    assert first.message_id == again.message_id != other.message_id
    assert first.path == again.path and Path(first.path).parent.name == "sent"
    assert again.sent == [] and len(sink.envelopes) == 2
    assert len(list((tmp_path / "outbox" / "sent").glob("*.eml"))) == 2
