"""The notifiers the codes go through: e-mail over SMTP to a real SMTP server (aiosmtpd, on a
loopback port), text messages through a brand's SmsSender, and what happens without one."""

from __future__ import annotations

import re
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller
from harness import Clock, start_local_brand, verify_enrolment

from contracts.chain import free_port
from gateway.settings import SmtpSettings

SENT_SMS: list[tuple[str, str]] = []


class RecordingSms:
    """An SmsSender as a brand would write one for its provider (GATEWAY_SMS_SENDER names its factory)."""

    def __init__(self, settings):
        self.brand = settings.brand_id

    def send_sms(self, to: str, text: str) -> None:
        SENT_SMS.append((to, text))


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp():
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, mailbox
    controller.stop()


def _brand(tmp_path, port: int, **settings):
    return start_local_brand(tmp_path, "mailer", clock=Clock(), notifier="smtp",
                             smtp=SmtpSettings(host="127.0.0.1", port=port, sender="codes@mailer.example", starttls=False),
                             **settings)


def test_codes_go_by_smtp_and_sms_and_verify_the_enrolment(tmp_path, smtp):
    controller, mailbox = smtp
    brand = _brand(tmp_path, controller.port, sms_sender=f"{__name__}:RecordingSms")
    try:
        r = brand.client.post("/v1/enrolments", json={"identifiers": {"email": "Mia@Example.com", "phone": "+86 138 0000 0042"},
                                                      "name": "Mia", "passphrase": "correct horse battery"})
        assert r.status_code == 202, r.text
        (to, mail), = mailbox.messages
        assert to == ["mia@example.com"] and mail["From"] == "codes@mailer.example" and "Mailer" in mail["Subject"]
        email_code = re.search(r"code is (\d{6})", mail.get_payload()).group(1)
        (number, text), = [m for m in SENT_SMS if m[0] == "+8613800000042"]
        sms_code = re.search(r"code is (\d{6})", text).group(1)
        r = verify_enrolment(brand, r.json()["enrolment_id"], {"email": email_code, "phone": sms_code})
        assert r.status_code == 201 and r.json()["welcome_points"] == 100, r.text
    finally:
        brand.close()


def test_without_an_sms_sender_phones_are_refused_and_a_dead_smtp_server_is_a_503(tmp_path, smtp):
    controller, _ = smtp
    body = {"name": "N", "passphrase": "correct horse battery"}
    brand = _brand(tmp_path / "no-sms", controller.port)
    try:
        r = brand.client.post("/v1/enrolments", json=body | {"identifiers": {"phone": "+8613800000043"}})
        assert r.status_code == 400 and "cannot send codes to a phone" in r.json()["detail"]
    finally:
        brand.close()
    brand = _brand(tmp_path / "dead", free_port())  # nothing listens there
    try:
        r = brand.client.post("/v1/enrolments", json=body | {"identifiers": {"email": "late@example.com"}})
        assert r.status_code == 503 and r.json()["code"] == "notifier_unavailable" and r.headers["Retry-After"]
        assert "127.0.0.1" not in r.text and "late@example.com" not in r.text
    finally:
        brand.close()
