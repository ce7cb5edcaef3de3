"""Settings from `PORTAL_*` environment variables, with typed parsing and embedded defaults.

Development and testing generate their secrets into `instance/` (with a warning); production refuses
to start without them.
"""

from __future__ import annotations

import json
import logging
import os
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

log = logging.getLogger(__name__)

ENVIRONMENTS = ("development", "testing", "production")
DEVELOPMENT_HUB_ENDPOINT = "vpn.example.net"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names it."""


def parse_int_list(raw: str) -> list[int]:
    return [int(part) for part in raw.split(",") if part.strip()]


def parse_str_list(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


MAIL_SECURITY = ("starttls", "tls", "none")


def parse_mail_security(raw: str) -> str:
    value = raw.strip().lower()
    if value not in MAIL_SECURITY:
        raise ValueError(f"must be one of {', '.join(MAIL_SECURITY)}, not {raw!r}")
    return value


# name -> (parser, default). A default of None means "not set".
SETTINGS: dict[str, tuple[Callable[[str], Any], Any]] = {
    "ENV": (str, "development"),
    "SECRET_KEY": (str, None),
    "ENCRYPTION_KEYS": (parse_str_list, None),
    "DATABASE_URL": (str, None),
    "REDIS_URL": (str, None),
    "QUEUE_NAME": (str, "portal"),
    "IPAM_POOL": (str, "10.100.0.0-10.254.255.255"),
    "IPAM_TENANT_PREFIX": (int, 16),
    "HUB_NAME": (str, "default"),
    "HUB_ENDPOINT": (str, None),
    "HUB_PORT": (int, 51820),
    "HUB_PUBLIC_KEY": (str, None),
    "HUB_INTERFACE": (str, "wg0"),
    "HUB_DRIVER": (str, "none"),
    "JOB_TIMEOUT": (int, 120),
    "LOCK_TTL": (int, 5),
    "LOCK_WAIT": (float, 5.0),
    "JOB_RETRY_INTERVALS": (parse_int_list, [5, 15, 60, 300, 900]),
    "SWEEP_INTERVAL": (int, 5),
    "BATCH_SIZE": (int, 200),
    "BATCH_LINGER": (float, 0.1),
    "RECONCILE_INTERVAL": (int, 30),
    "MONITOR_INTERVAL": (int, 10),
    "TRAFFIC_SAMPLE_INTERVAL": (int, 60),
    "TRAFFIC_RETENTION_DAYS": (int, 7),
    "SSH_CONNECT_TIMEOUT": (float, 10.0),
    "SSH_COMMAND_TIMEOUT": (float, 30.0),
    "SESSION_IDLE_MINUTES": (int, 120),
    "SESSION_MAX_HOURS": (int, 24),
    "LOGIN_MAX_FAILURES": (int, 5),
    "LOGIN_LOCKOUT_SECONDS": (int, 900),
    # roles that must sign in with a second factor (TOTP); an empty value requires it of nobody
    "REQUIRE_2FA_FOR": (parse_str_list, ["platform_admin", "support"]),
    "PAGE_SIZE": (int, 25),
    "TRUSTED_PROXIES": (int, 0),
    # E-mail (portal.mail): without a host, messages are written to MAIL_OUTBOX (default <instance>/outbox).
    "MAIL_HOST": (str, None),
    "MAIL_PORT": (int, 587),
    "MAIL_SECURITY": (parse_mail_security, "starttls"),
    "MAIL_USERNAME": (str, None),
    "MAIL_PASSWORD": (str, None),
    "MAIL_FROM": (str, "VPN portal <portal@localhost>"),
    "MAIL_TIMEOUT": (float, 10.0),
    "MAIL_OUTBOX": (str, None),
    # How long a one-time link sent by e-mail works: an invitation, a password reset.
    "INVITE_HOURS": (int, 72),
    "PASSWORD_RESET_HOURS": (int, 24),
    "IMPERSONATION_MINUTES": (int, 60),
    # RouterOS API (portal.routeros): one session with a router (connect, TLS, login, commands) lasts at most
    # ROUTEROS_TIMEOUT seconds; a push waits ROUTEROS_HANDSHAKE_WAIT seconds for the router's handshake on the
    # hub; routers with API access are asked for their facts every ROUTER_FACTS_INTERVAL seconds.
    "ROUTEROS_TIMEOUT": (float, 10.0),
    "ROUTEROS_HANDSHAKE_WAIT": (float, 60.0),
    "ROUTER_FACTS_INTERVAL": (int, 300),
    # The JSON API (portal.api): requests per token per window of API_RATE_WINDOW seconds; 0 turns the limit off.
    "API_RATE_LIMIT": (int, 120),
    "API_RATE_WINDOW": (int, 60),
    # Download links (portal.links): e-mailed links work LINK_DEFAULT_HOURS unless the sender chooses otherwise, at
    # most LINK_MAX_HOURS; a router command ROUTER_FETCH_MINUTES. One client address may ask for LINK_MAX_FAILURES
    # links that do not work (unknown, used, expired, revoked) per 15 minutes.
    "LINK_DEFAULT_HOURS": (int, 72),
    "LINK_MAX_HOURS": (int, 168),
    "ROUTER_FETCH_MINUTES": (int, 30),
    "LINK_MAX_FAILURES": (int, 30),
    # `json` (one object per line) or `text`; unset: json in production, text elsewhere
    "LOG_FORMAT": (str, None),
    # Shows /readyz details to a client outside the internal network that sends it as a bearer token.
    "OPS_TOKEN": (str, None),
}


def read_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for name, (parse, default) in SETTINGS.items():
        raw = environ.get(f"PORTAL_{name}")
        if raw is None:
            settings[name] = default
            continue
        try:
            settings[name] = parse(raw)
        except ValueError as error:
            raise ConfigError(f"PORTAL_{name}: {error}") from error
    return settings


def development_secrets(instance_path: Path) -> dict[str, Any]:
    """Secrets for development and tests, generated once into `instance/dev-secrets.json`."""
    path = instance_path / "dev-secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from portal.crypto import generate_keypair  # late: crypto imports nothing from here, keep it so

    hub_key = generate_keypair()
    secrets = {
        "SECRET_KEY": Fernet.generate_key().decode(),
        "ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
        "HUB_PRIVATE_KEY": hub_key.private,
        "HUB_PUBLIC_KEY": hub_key.public,
    }
    instance_path.mkdir(parents=True, exist_ok=True)
    draft = instance_path / f".dev-secrets.{os.getpid()}.tmp"
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(secrets, handle, indent=2)
    try:
        os.link(draft, path)  # atomic and exclusive: a process starting at the same moment keeps the first file
    except FileExistsError:
        return json.loads(path.read_text())
    finally:
        draft.unlink()
    log.warning("Generated development secrets into %s: never use them in production", path)
    return secrets


def build_config(environ: Mapping[str, str], instance_path: Path, overrides: Mapping[str, Any]) -> dict:
    """The Flask config: environment, then development secrets where allowed, then overrides.

    Overrides named like a setting (`DATABASE_URL`) replace it; any other key (`WTF_CSRF_ENABLED`) goes
    into the Flask config as it is.
    """
    settings = read_environment(environ)
    settings.update({name: value for name, value in overrides.items() if name in SETTINGS})
    flask_overrides = {name: value for name, value in overrides.items() if name not in SETTINGS}
    env = settings["ENV"]
    if env not in ENVIRONMENTS:
        raise ConfigError(f"PORTAL_ENV must be one of {', '.join(ENVIRONMENTS)}, not {env!r}")
    if env == "production":
        missing = [f"PORTAL_{name}" for name in ("SECRET_KEY", "ENCRYPTION_KEYS") if not settings[name]]
        if missing:
            raise ConfigError(f"production refuses to start without {', '.join(missing)}")
        validate_secret_key(settings["SECRET_KEY"])
    else:
        missing = [name for name in ("SECRET_KEY", "ENCRYPTION_KEYS", "HUB_PUBLIC_KEY") if not settings[name]]
        generated = development_secrets(instance_path) if missing else {}
        settings.update({name: generated[name] for name in missing})
        settings["HUB_ENDPOINT"] = settings["HUB_ENDPOINT"] or DEVELOPMENT_HUB_ENDPOINT
    validate_encryption_keys(settings["ENCRYPTION_KEYS"])
    _validate_job_settings(settings)
    settings["LOG_FORMAT"] = settings["LOG_FORMAT"] or ("json" if env == "production" else "text")
    if settings["LOG_FORMAT"] not in ("json", "text"):
        raise ConfigError(f"PORTAL_LOG_FORMAT must be json or text, not {settings['LOG_FORMAT']!r}")
    if not settings["DATABASE_URL"]:
        settings["DATABASE_URL"] = f"sqlite:///{instance_path / 'portal.db'}"
    return {**flask_config(settings), **flask_overrides}


def _validate_job_settings(settings: dict[str, Any]) -> None:
    """A lock lives PORTAL_LOCK_TTL seconds past its worker's last extension (every third of it): long enough to
    ride out a pause, short enough that a dead worker's hub is free again within seconds."""
    if settings["LOCK_TTL"] < 3:
        raise ConfigError("PORTAL_LOCK_TTL must be at least 3 seconds (the lock is extended every third of it)")
    if settings["SSH_CONNECT_TIMEOUT"] + settings["SSH_COMMAND_TIMEOUT"] >= settings["JOB_TIMEOUT"]:
        raise ConfigError("PORTAL_SSH_CONNECT_TIMEOUT + PORTAL_SSH_COMMAND_TIMEOUT must be shorter than "
                          "PORTAL_JOB_TIMEOUT, so a job records a hub that does not answer before it is killed")
    for name in ("SWEEP_INTERVAL", "BATCH_SIZE", "API_RATE_WINDOW"):
        if settings[name] < 1:
            raise ConfigError(f"PORTAL_{name} must be at least 1")
    _validate_routeros_settings(settings)


def _validate_routeros_settings(settings: dict[str, Any]) -> None:
    if settings["ROUTER_FACTS_INTERVAL"] < 1:
        raise ConfigError("PORTAL_ROUTER_FACTS_INTERVAL must be at least 1")
    if not 0 < settings["ROUTEROS_TIMEOUT"] <= settings["JOB_TIMEOUT"] / 2:
        raise ConfigError("PORTAL_ROUTEROS_TIMEOUT must be positive and at most half of PORTAL_JOB_TIMEOUT (a job may "
                          "need two sessions with a router: a key rotation's push and its rollback)")
    if settings["ROUTEROS_HANDSHAKE_WAIT"] < 0:
        raise ConfigError("PORTAL_ROUTEROS_HANDSHAKE_WAIT must not be negative")


SECRET_KEY_BITS = 256
HEX_DIGITS, URLSAFE = set("0123456789abcdefABCDEF"), set(string.ascii_letters + string.digits + "-_=+/")


def secret_key_bits(key: str) -> float:
    """A cautious estimate of a key's entropy: its length times the bits per character of the smallest
    alphabet it is drawn from (hex 4, base64 6, anything else 6.5), and nothing for a key of few distinct
    characters (a repeated or dictionary-like string)."""
    if len(set(key)) < 12:
        return 0.0
    per_character = 4 if set(key) <= HEX_DIGITS else 6 if set(key) <= URLSAFE else 6.5
    return len(key) * per_character


def validate_secret_key(key: str) -> None:
    if secret_key_bits(key) < SECRET_KEY_BITS:
        raise ConfigError(
            f"PORTAL_SECRET_KEY is too weak for production: it signs every session, so it needs about "
            f"{SECRET_KEY_BITS // 8} random bytes (for example `python -c \"import secrets; "
            f"print(secrets.token_urlsafe(32))\"`)")


def validate_encryption_keys(keys: list[str]) -> None:
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except ValueError as error:
            raise ConfigError(f"PORTAL_ENCRYPTION_KEYS entry {index + 1} is not a Fernet key") from error


def flask_config(settings: dict[str, Any]) -> dict[str, Any]:
    production = settings["ENV"] == "production"
    return {
        **{f"PORTAL_{name}": value for name, value in settings.items()},
        "SECRET_KEY": settings["SECRET_KEY"],
        "TESTING": settings["ENV"] == "testing",
        "SQLALCHEMY_DATABASE_URI": settings["DATABASE_URL"],
        # PostgreSQL's pooled connections are checked without a round trip (portal._ping_only_when_the_server_spoke)
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": not settings["DATABASE_URL"].startswith("postgresql")},
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_SECURE": production,
        "WTF_CSRF_TIME_LIMIT": None,
    }
