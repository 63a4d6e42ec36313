"""Messages to members: the one-time codes that prove an identifier at enrolment.

`Notifier` is what the gateway calls. Two exist:
- `DevNotifier` (the embedded default): appends each message as a JSON line to
  `<notifications_dir>/<brand>.jsonl`, where the demo, the tests and a developer read the codes. It
  stands in for a phone and a mailbox; never run a public gateway with it.
- `SmtpNotifier`: e-mail over SMTP (the standard library's smtplib, STARTTLS by default) and text
  messages through the brand's `SmsSender`, an interface a brand implements for its SMS provider
  and names in `GATEWAY_SMS_SENDER` ("package.module:factory"; the factory takes the settings).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import smtplib
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Literal, Protocol

from .settings import GatewaySettings, SmtpSettings

log = logging.getLogger("gateway")
Channel = Literal["sms", "email"]
CHANNEL_OF = {"phone": "sms", "email": "email"}  # identifier kind -> how it is reached


class NotifierUnavailable(Exception):
    """The message could not be handed over for delivery (nothing says why to the caller's client)."""


@dataclass(frozen=True)
class Message:
    channel: Channel
    to: str  # E.164 phone number or e-mail address
    subject: str
    text: str
    code: str | None = None  # the one-time code the text carries, if any


class Notifier(Protocol):
    channels: frozenset[str]  # which of "sms", "email" it can reach

    def send(self, message: Message) -> None: ...


class SmsSender(Protocol):
    def send_sms(self, to: str, text: str) -> None: ...


class DevNotifier:
    """Development: every message appended to one file per brand (readable by its owner only)."""

    channels = frozenset({"sms", "email"})

    def __init__(self, directory: Path, brand_id: str):
        self.path = directory / f"{brand_id}.jsonl"
        self._lock = threading.Lock()
        self._made = False

    def send(self, message: Message) -> None:
        line = json.dumps(vars(message)) + "\n"  # flat: vars, not the recursive (and slower) asdict
        with self._lock:
            if not self._made:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._made = True
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as fh:
                fh.write(line)

    def messages(self, to: str | None = None) -> list[Message]:
        """What was sent (to one recipient), oldest first."""
        if not self.path.exists():
            return []
        sent = [Message(**json.loads(line)) for line in self.path.read_text().splitlines() if line.strip()]
        return [m for m in sent if to is None or m.to == to]


class SmtpNotifier:
    """Production: e-mail over SMTP, text messages through the brand's SMS provider (if configured)."""

    def __init__(self, smtp: SmtpSettings, sms: SmsSender | None = None):
        self.smtp, self.sms = smtp, sms
        self.channels = frozenset({"email", "sms"} if sms is not None else {"email"})

    def send(self, message: Message) -> None:
        try:
            if message.channel == "sms":
                if self.sms is None:
                    raise NotifierUnavailable("no SMS sender is configured")
                self.sms.send_sms(message.to, message.text)
            else:
                self._mail(message)
        except NotifierUnavailable:
            raise
        except Exception as exc:  # SMTP and providers raise many kinds; the recipient stays out of the log
            log.warning("a %s message could not be handed over: %s", message.channel, type(exc).__name__)
            raise NotifierUnavailable(f"the {message.channel} message could not be sent") from None

    def _mail(self, message: Message) -> None:
        mail = EmailMessage()
        mail["From"], mail["To"], mail["Subject"] = self.smtp.sender, message.to, message.subject
        mail.set_content(message.text)
        with smtplib.SMTP(self.smtp.host, self.smtp.port, timeout=self.smtp.timeout_s) as server:
            if self.smtp.starttls:
                server.starttls()
            if self.smtp.username:
                server.login(self.smtp.username, self.smtp.password.get_secret_value() if self.smtp.password else "")
            server.send_message(mail)


def make_notifier(settings: GatewaySettings) -> Notifier:
    if settings.notifier == "dev":
        return DevNotifier(settings.notifications_dir, settings.brand_id)
    if settings.smtp is None:
        raise ValueError("notifier=smtp needs GATEWAY_SMTP (host, sender, ...)")
    sms = None
    if settings.sms_sender:
        module, _, factory = settings.sms_sender.partition(":")
        sms = getattr(importlib.import_module(module), factory)(settings)
    return SmtpNotifier(settings.smtp, sms)
