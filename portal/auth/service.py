"""Passwords and login throttling.

Failed logins are counted in Redis per (e-mail address, client address) and, more leniently, per client address,
in a fixed window; past the limit, logins from that address are refused until the window ends (the count is a
rate limit, not data). Nobody can lock an account out from another address.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.redis_client import redis_connection
from portal.tenancy.models import User

log = logging.getLogger(__name__)
PASSWORD_MIN = 10
# One address may be a whole office behind NAT: it gets this many times the per-account limit.
IP_LIMIT_FACTOR = 10
# Compared against when the e-mail is unknown, so both paths cost one scrypt.
_UNKNOWN_USER_HASH = generate_password_hash("no such user, no such password")


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


def check_password_strength(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise ValueError(f"Passwords need at least {PASSWORD_MIN} characters.")


@dataclass(frozen=True)
class LoginResult:
    user: User | None = None
    retry_after: int | None = None  # seconds, when throttled


def _throttle_keys(email: str, ip: str) -> list[str]:
    """Failures of one account from one address, and of every account from that address. There is no count
    per account alone: a stranger's guesses from elsewhere must never lock its owner out."""
    return [f"portal:login-failures:account:{ip}:{email}", f"portal:login-failures:ip:{ip}"]


def authenticate(email: str, password: str, ip: str) -> LoginResult:
    """The user if the password matches and the login is not throttled."""
    email = email.strip().lower()
    config = current_app.config
    keys = _throttle_keys(email, ip)
    retry_after = _throttled(keys, config["PORTAL_LOGIN_MAX_FAILURES"])
    if retry_after:
        return LoginResult(retry_after=retry_after)
    user = db.session.scalar(select(User).where(func.lower(User.email) == email))
    # One scrypt whatever the account (unknown, deactivated or active), so the answer's timing tells nothing.
    matches = check_password_hash(user.password_hash if user is not None else _UNKNOWN_USER_HASH, password)
    if user is not None and user.active and matches:
        _forget_failures(keys[0])
        return LoginResult(user=user)
    _count_failure(keys, config["PORTAL_LOGIN_LOCKOUT_SECONDS"])
    return LoginResult()


# Throttling lives in Redis. Without Redis, sign-in still works (unthrottled, and logged): a Redis outage must
# not lock every user out of the portal.

def _throttled(keys: list[str], limit: int) -> int:
    """Seconds until the login may be tried again, or 0."""
    try:
        redis = redis_connection()
        email_failures, ip_failures = (int(value or 0) for value in redis.mget(keys))
        if email_failures >= limit or ip_failures >= limit * IP_LIMIT_FACTOR:
            return max(1, *(redis.ttl(key) for key in keys))
    except RedisError as error:
        log.warning("login throttling unavailable (Redis: %s); the login goes on unthrottled", error)
    return 0


def _forget_failures(key: str) -> None:
    try:
        redis_connection().delete(key)
    except RedisError as error:
        log.warning("could not reset the login failure count (Redis: %s)", error)


def _count_failure(keys: list[str], window: int) -> None:
    try:
        with redis_connection().pipeline() as pipe:
            for key in keys:  # the window starts at the first failure (SET NX works on Redis 6 too)
                pipe.set(key, 0, ex=window, nx=True)
                pipe.incr(key)
            pipe.execute()
    except RedisError as error:
        log.warning("could not count a failed login (Redis: %s)", error)
