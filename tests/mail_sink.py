"""A real SMTP server for the reminder tests (aiosmtpd in a thread): it keeps every message it
accepts and every refusal it answered, and can be told to refuse for now or for good, to answer
slowly, or to stop listening altogether."""

import asyncio
import email
import itertools
import threading
import time
import weakref
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from typing import cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

ACCEPTED = "250 2.0.0 accepted"


@dataclass(frozen=True)
class Received:
    message: EmailMessage
    message_id: str
    raw: bytes
    rcpt_tos: tuple[str, ...]
    connection: int  # the connection it came over: one number per connection
    at: float  # time.time() when the sink accepted it


@dataclass(frozen=True)
class Refusal:
    recipient: str
    reply: str
    at: float


class MailSink:
    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"smtp://127.0.0.1:{port}"
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._refusals: list[Refusal] = []
        self._rcpt_reply: str | None = None
        self._data_reply: str | None = None
        self._delay = 0.0
        self._controller: Controller | None = None
        self._connections: weakref.WeakKeyDictionary[Session, int] = weakref.WeakKeyDictionary()
        self._numbers = itertools.count(1)

    def start(self) -> None:
        """Listen on the sink's port (again, after stop())."""
        controller = Controller(self, hostname="127.0.0.1", port=self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        """Stop listening: the mail server is unreachable until start()."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def running(self) -> bool:
        return self._controller is not None

    def accept(self) -> None:
        """Accept every message at once (the state a test starts in)."""
        self._rcpt_reply = self._data_reply = None
        self._delay = 0.0

    def refuse_recipients(self, reply: str) -> None:
        """Answer RCPT TO with `reply` (e.g. a 550) and so take no message."""
        self._rcpt_reply = reply

    def refuse_data(self, reply: str) -> None:
        """Take the message's data, then answer `reply` (e.g. a 451) instead of accepting it."""
        self._data_reply = reply

    def answer_slowly(self, seconds: float) -> None:
        """Wait this long after each message's data before answering it."""
        self._delay = seconds

    def clear(self) -> None:
        with self._lock:
            self._received.clear()
            self._refusals.clear()

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    @property
    def refusals(self) -> list[Refusal]:
        with self._lock:
            return list(self._refusals)

    async def handle_RCPT(  # noqa: N802  (aiosmtpd's hook names)
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self._rcpt_reply
        if reply is not None:
            self._refused([address], reply)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self._delay:
            await asyncio.sleep(self._delay)
        reply = self._data_reply
        if reply is not None:
            self._refused(envelope.rcpt_tos, reply)
            return reply
        raw = cast(bytes, envelope.original_content)
        message = cast(EmailMessage, email.message_from_bytes(raw, policy=policy.default))
        with self._lock:
            connection = self._connections.setdefault(session, next(self._numbers))
            received = Received(
                message, str(message["Message-ID"]), raw, tuple(envelope.rcpt_tos), connection, time.time()
            )
            self._received.append(received)
        return ACCEPTED

    def _refused(self, recipients: list[str], reply: str) -> None:
        with self._lock:
            self._refusals.extend(Refusal(recipient, reply, time.time()) for recipient in recipients)
