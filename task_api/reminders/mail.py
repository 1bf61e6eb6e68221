"""A reminder as an e-mail, and the two ways it leaves: an SMTP server, or the log."""

import logging
import smtplib
import ssl
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Protocol
from urllib.parse import unquote, urlsplit

from task_api.config import SMTP_SCHEMES, Settings
from task_api.reminders.claims import Reminder

logger = logging.getLogger(__name__)

DESCRIPTION_SHOWN = 500  # characters of the description a reminder quotes
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SERVER_REFUSALS = (smtplib.SMTPConnectError, smtplib.SMTPHeloError, smtplib.SMTPAuthenticationError)
SERVER_CLOSING = 421
SUBJECT_DROPPED = frozenset({"Cc", "Zl", "Zp"})  # control characters and line breaks


class MailDeferred(Exception):
    """The mail server refused for now (4xx) or could not be reached: try again later."""


class MailServerUnavailable(MailDeferred):
    """The mail server cannot be reached, or will not talk to us now (421, authentication)."""


class MailRefused(Exception):
    """The mail server refused for good (5xx)."""


Send = Callable[[EmailMessage], None]


class Mailer(Protocol):
    def connect(self) -> AbstractContextManager[Send]:
        """A sender for a batch of messages, over one connection where there is one."""


def mailer_for(settings: Settings) -> Mailer:
    """SMTP_URL's server, or the log when there is none."""
    return SmtpMailer(settings.smtp_url, settings.smtp_timeout) if settings.smtp_url else LogMailer()


def reminder_message(reminder: Reminder, mail_from: str) -> EmailMessage:
    """The mail for one reminder; its Message-ID names the reminder (task and `remind_at`), so
    the rare second copy after a crash is recognisably the same message."""
    display_name, address = parseaddr(mail_from)
    domain = address.rpartition("@")[2] or "localhost"
    claim = reminder.claim
    title = "".join(char for char in reminder.title if unicodedata.category(char) not in SUBJECT_DROPPED)
    message = EmailMessage()
    message["Subject"] = f"Reminder: {title}"
    message["From"] = Address(display_name, addr_spec=address) if display_name else address
    message["To"] = reminder.email
    message["Date"] = formatdate(usegmt=True)
    microseconds = (claim.remind_at - EPOCH) // timedelta(microseconds=1)  # exact, where a float's would round
    message["Message-ID"] = f"<reminder.{claim.task_id}.{microseconds}@{domain}>"
    lines = [f"Reminder: {reminder.title}", ""]
    if reminder.due_date is not None:
        lines += [f"Due: {reminder.due_date.isoformat()}", ""]
    if reminder.description:
        shown = reminder.description[:DESCRIPTION_SHOWN]
        lines.append(shown + ("…" if len(reminder.description) > DESCRIPTION_SHOWN else ""))
    message.set_content("\n".join(lines) + "\n")
    return message


class LogMailer:
    """The embedded default's mail: a log line per reminder, naming its task's title."""

    @contextmanager
    def connect(self) -> Iterator[Send]:
        yield self._log

    @staticmethod
    def _log(message: EmailMessage) -> None:
        logger.info("reminder for %s: %s (Message-ID %s)", message["To"], message["Subject"], message["Message-ID"])


class SmtpMailer:
    """SMTP_URL's server: `smtp://` upgraded with STARTTLS when the server offers it, `smtps://`
    in TLS from the start, with the URL's user and password when it has them."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        self.tls = parts.scheme == "smtps"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or SMTP_SCHEMES[parts.scheme]
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password or "")
        self.timeout = timeout
        self._tls_context: ssl.SSLContext | None = None

    @contextmanager
    def connect(self) -> Iterator[Send]:
        connection: smtplib.SMTP | None = None

        def send(message: EmailMessage) -> None:
            reused = connection is not None
            try:
                transmit(message)
            except MailServerUnavailable:
                if not reused:
                    raise
                # Once more on a new connection: servers drop idle ones and cap messages per
                # connection, and a dropped connection fails at MAIL, before any mail went.
                transmit(message)

        def transmit(message: EmailMessage) -> None:
            nonlocal connection
            try:
                connection = connection or self._open()
                connection.send_message(message)
            except smtplib.SMTPRecipientsRefused as exc:
                codes = [code for code, _ in exc.recipients.values()]
                raise (MailDeferred if all(400 <= code < 500 for code in codes) else MailRefused)(str(codes)) from None
            except smtplib.SMTPResponseException as exc:
                # the server is closing, or will not have us at all: the operator's to fix, not the mail's fault
                refuses_us = isinstance(exc, SERVER_REFUSALS) or exc.smtp_code == SERVER_CLOSING
                if exc.smtp_code >= 500 and not refuses_us:
                    raise MailRefused(f"{exc.smtp_code} {exc.smtp_error!r}") from None
                if refuses_us:
                    _close(connection)
                    connection = None
                    raise MailServerUnavailable(f"{exc.smtp_code} {exc.smtp_error!r}") from None
                raise MailDeferred(f"{exc.smtp_code} {exc.smtp_error!r}") from None
            except smtplib.SMTPNotSupportedError as exc:  # e.g. an address only SMTPUTF8 can carry
                raise MailRefused(str(exc)) from None
            except (OSError, smtplib.SMTPException) as exc:  # unreachable, timed out, disconnected, TLS
                _close(connection)
                connection = None
                raise MailServerUnavailable(f"{type(exc).__name__}: {exc}") from None

        try:
            yield send
        finally:
            if connection is not None:
                with suppress(OSError, smtplib.SMTPException):
                    connection.quit()

    def _open(self) -> smtplib.SMTP:
        if self.tls:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._tls())
        else:
            connection = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        connection.ehlo()
        if not self.tls and connection.has_extn("starttls"):
            connection.starttls(context=self._tls())
            connection.ehlo()
        if self.username:
            connection.login(self.username, self.password)
        return connection

    def _tls(self) -> ssl.SSLContext:
        """Built once, when first needed: it loads the system's CA certificates (~20 ms)."""
        if self._tls_context is None:
            self._tls_context = ssl.create_default_context()
        return self._tls_context


def _close(connection: smtplib.SMTP | None) -> None:
    """Drop a connection after a failure; the next message opens a new one."""
    if connection is not None:
        with suppress(OSError, smtplib.SMTPException):
            connection.close()
