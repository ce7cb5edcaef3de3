"""E-mail (portal.mail): over SMTP to a real server (aiosmtpd, in this process) in the clear, with STARTTLS and
with implicit TLS, with a login; to the outbox when no server is set; and a failure that changes nothing."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat
from email import message_from_bytes, policy
from itertools import count

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from portal.devserver import free_port
from tests.conftest import post

_numbers = count(1)
# The implicit-TLS server runs with auth_require_tls=False (aiosmtpd only counts STARTTLS as TLS), and says so.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
SMTP_USER, SMTP_SECRET = "portal", "smtp login for the tests"


class Inbox:
    """The aiosmtpd handler: keeps every message it accepts."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
        return "250 OK"


def check_login(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        SMTP_USER.encode(), SMTP_SECRET.encode())
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE as a real CA would be."""
    folder = tmp_path_factory.mktemp("smtp-tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def server_context(certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


@pytest.fixture
def smtp(app, monkeypatch, certificate):
    """Start a real SMTP server and point the portal at it: `smtp(security, **server_options)` -> its Inbox."""
    controllers = []

    def start(security: str, login: bool = False, **options) -> Inbox:
        inbox, port = Inbox(), free_port()
        if security == "starttls":
            options.update(tls_context=server_context(certificate), require_starttls=True)
        if security == "tls":  # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS throughout
            options.update(ssl_context=server_context(certificate), auth_require_tls=False)
        if login:
            options.update(authenticator=check_login, auth_required=True)
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the client trusts the test certificate
        for name, value in {"HOST": "127.0.0.1", "PORT": port, "SECURITY": security, "TIMEOUT": 5.0,
                            "USERNAME": SMTP_USER if login else None, "PASSWORD": SMTP_SECRET if login else None,
                            "OUTBOX": None}.items():
            monkeypatch.setitem(app.config, f"PORTAL_MAIL_{name}", value)
        return inbox

    yield start
    for controller in controllers:
        controller.stop()


def new_email() -> str:
    return f"mail-{os.getpid()}-{next(_numbers)}@mail.example"


def user_exists(app, email: str) -> bool:
    from portal.extensions import db
    from portal.tenancy.models import User

    with app.app_context():
        return bool(db.session.scalar(select(func.count()).where(User.email == email)))


@pytest.mark.parametrize(("security", "login"), [("none", False), ("starttls", True), ("tls", True)])
def test_an_invitation_arrives_with_both_parts_and_the_link(app, admin_client, smtp, security, login):
    inbox = smtp(security, login=login)
    email = new_email()
    response = post(admin_client, "/users", {"email": email}, token_page="/users", follow_redirects=True)
    assert f"An invitation was sent to {email}." in response.get_data(as_text=True)

    [(recipients, message)] = inbox.messages
    assert recipients == [email] and message["To"] == email
    assert message["From"] == app.config["PORTAL_MAIL_FROM"] and message["Subject"] and message["Message-ID"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    link = next(word for word in text.split() if "/invite/" in word)
    assert link.startswith("http://localhost/invite/")  # absolute: it is opened from a mail program
    assert f'href="{link}"' in html
    assert admin_client.get(link.removeprefix("http://localhost")).status_code == 200


def test_starttls_is_required_when_configured(app, admin_client, smtp):
    smtp("none")  # a server that offers no STARTTLS
    app.config["PORTAL_MAIL_SECURITY"] = "starttls"  # restored by the fixture's monkeypatch
    email = new_email()
    response = post(admin_client, "/users", {"email": email}, token_page="/users")
    assert response.status_code == 422
    assert "could not be sent" in response.get_data(as_text=True)
    assert not user_exists(app, email)


def test_a_wrong_smtp_login_is_reported_and_changes_nothing(app, admin_client, smtp):
    inbox = smtp("starttls", login=True)
    app.config["PORTAL_MAIL_PASSWORD"] = "not the smtp password"
    email = new_email()
    response = post(admin_client, "/users", {"email": email}, token_page="/users")
    assert response.status_code == 422 and "535" in response.get_data(as_text=True)
    assert inbox.messages == [] and not user_exists(app, email)


def test_an_unreachable_server_changes_nothing(app, admin_client, monkeypatch):
    for name, value in {"HOST": "127.0.0.1", "PORT": free_port(), "SECURITY": "none", "TIMEOUT": 2.0}.items():
        monkeypatch.setitem(app.config, f"PORTAL_MAIL_{name}", value)
    email = new_email()
    response = post(admin_client, "/users", {"email": email}, token_page="/users")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "The e-mail could not be sent (mail server 127.0.0.1:" in page and "Nothing was changed" in page
    assert not user_exists(app, email)


def test_without_a_host_the_message_is_written_to_the_outbox(app, outbox):
    from portal import mail

    with app.test_request_context():
        path = mail.send("someone@mail.example", "Hello", "plain words", "<p>html words</p>")
    assert path.parent == outbox.folder and path.name.endswith(".eml")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may carry a link that sets a password
    message = outbox.last("someone@mail.example")
    assert message.get_body(("plain",)).get_content().strip() == "plain words"
    assert message.get_body(("html",)).get_content().strip() == "<p>html words</p>"


def test_an_address_that_would_inject_headers_is_refused(app, outbox):
    from portal import mail
    from portal.errors import DomainError

    with app.test_request_context(), pytest.raises(DomainError):
        mail.send("victim@mail.example\nBcc: everyone@mail.example", "Hello", "text", "<p>html</p>")
    assert outbox.messages() == []


def test_the_mail_security_setting_is_checked(app):
    from portal.config import ConfigError, read_environment

    assert read_environment({"PORTAL_MAIL_SECURITY": "STARTTLS"})["MAIL_SECURITY"] == "starttls"
    with pytest.raises(ConfigError, match="PORTAL_MAIL_SECURITY"):
        read_environment({"PORTAL_MAIL_SECURITY": "ssl"})
