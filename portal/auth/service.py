"""Passwords and login throttling.

Failed logins (wrong passwords, and wrong second-factor codes) are counted in Redis per (e-mail address, client
address). The first PORTAL_LOGIN_MAX_FAILURES are free; each further one makes that pair wait, 30 s after the
first and twice as long after each next one, up to PORTAL_LOGIN_LOCKOUT_SECONDS. The count is forgotten after a
day without failures, or at a successful sign-in. Every account from one address shares a budget ten times as
large, in a fixed window of PORTAL_LOGIN_LOCKOUT_SECONDS. There is no count per account alone: a stranger's
guesses from elsewhere never make its owner wait. The counts are rate limits, not data.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from portal import metrics
from portal.extensions import db
from portal.redis_client import redis_connection
from portal.tenancy.models import User

log = logging.getLogger(__name__)
PASSWORD_MIN = 12
COMMON_PASSWORDS = Path(__file__).with_name("common-passwords.txt")
# What is left of "Summer2024!" once the digits and symbols at its end are gone: a common password dressed up.
TRAILING_DIGITS_AND_SYMBOLS = re.compile(r"[\d\W_]+$")
# One address may be a whole office behind NAT: it gets this many times the per-account limit.
IP_LIMIT_FACTOR = 10
# The wait after the first failure past the free ones; it doubles with each further failure.
FIRST_WAIT = 30
# Failures of an (account, address) pair are forgotten after this long without another one.
FORGET_FAILURES_AFTER = 24 * 3600


def hash_password(password: str) -> str:
    return generate_password_hash(password, method="scrypt")


# Compared against when the e-mail is unknown, so both paths cost one scrypt with the same parameters.
_UNKNOWN_USER_HASH = hash_password("no such user, no such password")


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and not line.startswith("#"))


def check_password_strength(password: str) -> None:
    """ValueError saying what is wrong with a new password: too short, one character or a short pattern
    repeated, or a common password (compared case-insensitively, with and without digits and symbols at the
    end)."""
    if len(password) < PASSWORD_MIN:
        raise ValueError(f"Passwords need at least {PASSWORD_MIN} characters.")
    if len(set(password)) == 1:
        raise ValueError("A password cannot be one character repeated.")
    if any(password == password[:size] * (len(password) // size) for size in (2, 3, 4)):
        raise ValueError("A password cannot be a few characters repeated.")
    lowered = password.lower()
    if lowered in common_passwords() or TRAILING_DIGITS_AND_SYMBOLS.sub("", lowered) in common_passwords():
        raise ValueError("That password is on a list of common passwords that attackers try first: choose another "
                         "(a few unrelated words make a strong one).")


@dataclass(frozen=True)
class LoginResult:
    user: User | None = None
    retry_after: int | None = None  # seconds, when throttled


def authenticate(email: str, password: str, ip: str) -> LoginResult:
    """The user if the password matches and the login is not throttled; a mismatch is counted. The failure count
    is kept until `login_succeeded` (after the second factor, for users who have one)."""
    email = normalize_email(email)
    retry_after = throttled(email, ip)
    if retry_after:
        return LoginResult(retry_after=retry_after)
    user = db.session.scalar(select(User).where(func.lower(User.email) == email))
    # One scrypt whatever the account (unknown, deactivated or active), so the answer's timing tells nothing.
    matches = check_password_hash(user.password_hash if user is not None else _UNKNOWN_USER_HASH, password)
    if user is not None and user.active and matches:
        return LoginResult(user=user)
    count_failure(email, ip)
    return LoginResult()


def normalize_email(email: str) -> str:
    return email.strip().lower()


def wait_text(seconds: int) -> str:
    """"30 seconds", "about 4 minutes": how long a throttled login waits, for a person."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"about {round(seconds / 60)} minutes"


# Throttling lives in Redis. Without Redis, sign-in still works (unthrottled, and logged): a Redis outage must
# not lock every user out of the portal.

def _keys(email: str, ip: str) -> tuple[str, str, str]:
    """The failures of one account from one address, the wait they imposed, and the failures of every account
    from that address."""
    return (f"portal:login-failures:account:{ip}:{email}", f"portal:login-failures:wait:{ip}:{email}",
            f"portal:login-failures:ip:{ip}")


def wait_after(failures: int, free: int, longest: int) -> int:
    """Seconds an (account, address) pair waits after its `failures`-th failure in a row."""
    if failures < free:
        return 0
    return min(longest, FIRST_WAIT * 2 ** min(failures - free, 32))


def throttled(email: str, ip: str) -> int:
    """Seconds until a login of `email` from `ip` may be tried again, or 0."""
    config = current_app.config
    _, wait_key, ip_key = _keys(normalize_email(email), ip)
    try:
        redis = redis_connection()
        with redis.pipeline(transaction=False) as pipe:
            pipe.pttl(wait_key)
            pipe.get(ip_key)
            pipe.ttl(ip_key)
            wait_ms, ip_failures, ip_ttl = pipe.execute()
        if wait_ms > 0:
            return math.ceil(wait_ms / 1000)
        if int(ip_failures or 0) >= config["PORTAL_LOGIN_MAX_FAILURES"] * IP_LIMIT_FACTOR:
            return max(1, ip_ttl)
    except RedisError as error:
        log.warning("login throttling unavailable (Redis: %s); the login goes on unthrottled", error)
    return 0


def count_failure(email: str, ip: str) -> None:
    """A wrong password or second-factor code for `email` from `ip`."""
    metrics.count("login_failures")
    config = current_app.config
    account_key, wait_key, ip_key = _keys(normalize_email(email), ip)
    try:
        redis = redis_connection()
        with redis.pipeline() as pipe:
            pipe.incr(account_key)
            pipe.expire(account_key, max(FORGET_FAILURES_AFTER, config["PORTAL_LOGIN_LOCKOUT_SECONDS"]))
            pipe.set(ip_key, 0, ex=config["PORTAL_LOGIN_LOCKOUT_SECONDS"], nx=True)  # a window from the first
            pipe.incr(ip_key)
            failures = pipe.execute()[0]
        wait = wait_after(failures, config["PORTAL_LOGIN_MAX_FAILURES"], config["PORTAL_LOGIN_LOCKOUT_SECONDS"])
        if wait:
            redis.set(wait_key, failures, ex=wait)
    except RedisError as error:
        log.warning("could not count a failed login (Redis: %s)", error)


def login_succeeded(email: str, ip: str) -> None:
    """Forget the pair's failures (the address's budget runs out its window)."""
    account_key, wait_key, _ = _keys(normalize_email(email), ip)
    try:
        redis_connection().delete(account_key, wait_key)
    except RedisError as error:
        log.warning("could not reset the login failure count (Redis: %s)", error)
