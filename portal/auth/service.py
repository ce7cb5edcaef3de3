"""Passwords and login throttling.

Failed logins are counted in Redis per e-mail address and (more leniently) per client address, in a fixed window;
past the limit, logins are refused until the window ends (the count is a rate limit, not data).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal.extensions import db
from portal.redis_client import redis_connection
from portal.tenancy.models import User

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
    return [f"portal:login-failures:email:{email}", f"portal:login-failures:ip:{ip}"]


def authenticate(email: str, password: str, ip: str) -> LoginResult:
    """The user if the password matches and the login is not throttled."""
    email = email.strip().lower()
    config = current_app.config
    redis = redis_connection()
    keys = _throttle_keys(email, ip)
    email_failures, ip_failures = (int(value or 0) for value in redis.mget(keys))
    limit = config["PORTAL_LOGIN_MAX_FAILURES"]
    if email_failures >= limit or ip_failures >= limit * IP_LIMIT_FACTOR:
        return LoginResult(retry_after=max(redis.ttl(key) for key in keys))
    user = db.session.scalar(select(User).where(func.lower(User.email) == email))
    if user is not None and user.active and check_password_hash(user.password_hash, password):
        redis.delete(keys[0])
        return LoginResult(user=user)
    if user is None:
        check_password_hash(_UNKNOWN_USER_HASH, password)
    with redis.pipeline() as pipe:
        for key in keys:  # the window starts at the first failure (SET NX works on Redis 6 too)
            pipe.set(key, 0, ex=config["PORTAL_LOGIN_LOCKOUT_SECONDS"], nx=True)
            pipe.incr(key)
        pipe.execute()
    return LoginResult()
