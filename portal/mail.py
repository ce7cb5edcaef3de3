"""E-mail: one message with a plain-text body and an HTML alternative.

With PORTAL_MAIL_HOST set, the message goes over SMTP (STARTTLS, implicit TLS or, on a trusted network, none;
a login when PORTAL_MAIL_USERNAME is set). Without it, as under `make run`, the message is written to
`<instance>/outbox/` (or PORTAL_MAIL_OUTBOX) as an `.eml` file that any mail program opens, and `send` returns
its path so the page can say where it went. Each e-mail is a template pair, `templates/mail/<name>.txt` and
`.html`.

A message that cannot be handed to the server raises `MailError`, a DomainError: the view rolls back, so the
change the e-mail was about (an invitation, a password link) is not made either.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import smtplib
import ssl
from email.errors import MessageError
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

from flask import current_app, render_template

from portal.errors import DomainError
from portal.types import utcnow

log = logging.getLogger(__name__)


class MailError(DomainError):
    """The e-mail could not be sent now (the server did not answer or refused it). Worth trying again later."""

    code = "mail_unavailable"


# An address as people type it: one @, a dot in the domain, no spaces or control characters, 254 at most.
ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]{1,64}@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")


def is_address(text: str) -> bool:
    return len(text) <= 254 and ADDRESS.fullmatch(text) is not None


def outbox_dir() -> Path:
    configured = current_app.config.get("PORTAL_MAIL_OUTBOX")
    return Path(configured) if configured else Path(current_app.instance_path) / "outbox"


def compose(to: str, subject: str, text_body: str, html_body: str) -> EmailMessage:
    sender = current_app.config["PORTAL_MAIL_FROM"]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text_body)
    message.add_alternative(html_body, subtype="html")
    return message


def send(to: str, subject: str, text_body: str, html_body: str) -> Path | None:
    """Send one message to `to`; the path of the `.eml` written when no SMTP host is set, else None."""
    try:
        Address(addr_spec=to)  # a header-safe address (no line breaks, one mailbox)
    except (ValueError, MessageError) as error:
        raise DomainError(f"{to!r} is not an e-mail address mail can be sent to.") from error
    message = compose(to, subject, text_body, html_body)
    if not current_app.config.get("PORTAL_MAIL_HOST"):
        return _write_to_outbox(message)
    _deliver(message)
    return None


def send_template(to: str, subject: str, template: str, **context) -> Path | None:
    """`send` with the bodies rendered from `templates/mail/<template>.txt` and `.html`."""
    text_body = render_template(f"mail/{template}.txt", **context)
    html_body = render_template(f"mail/{template}.html", **context)
    return send(to, subject, text_body, html_body)


def where(path: Path | None) -> str:
    """How a page says where the message went: the outbox file (relative to the project when under it)."""
    if path is None:
        return ""
    root = Path(current_app.instance_path).parent
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _write_to_outbox(message: EmailMessage) -> Path:
    folder = outbox_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{utcnow().strftime('%Y%m%dT%H%M%S.%fZ')}-{secrets.token_hex(4)}.eml"
    # 0600 and never over another file: the message carries a one-time link that signs its reader in.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(message.as_bytes())
    log.info("mail: no PORTAL_MAIL_HOST, wrote %r to %s", message["Subject"], path)
    return path


def _deliver(message: EmailMessage) -> None:
    config = current_app.config
    host, port, timeout = config["PORTAL_MAIL_HOST"], config["PORTAL_MAIL_PORT"], config["PORTAL_MAIL_TIMEOUT"]
    security = config["PORTAL_MAIL_SECURITY"]
    context = ssl.create_default_context()
    try:
        if security == "tls":
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            if security == "starttls":
                smtp.starttls(context=context)  # refuses (SMTPNotSupportedError) rather than send in clear
            if config.get("PORTAL_MAIL_USERNAME"):
                smtp.login(config["PORTAL_MAIL_USERNAME"], config.get("PORTAL_MAIL_PASSWORD") or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:  # refused, unreachable, timed out, TLS or login failed
        reason = _reason(error)
        log.warning("mail: could not send %r via %s:%s: %s", message["Subject"], host, port, reason)
        raise MailError(f"The e-mail could not be sent (mail server {host}:{port}: {reason}). Nothing was "
                        "changed; try again later.") from error


def _reason(error: Exception) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        text = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        return f"{error.smtp_code} {text}"[:200]
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return "the recipient was refused"
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return (str(error) or type(error).__name__)[:200]
