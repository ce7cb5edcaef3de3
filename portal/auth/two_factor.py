"""Two factors: TOTP codes (RFC 6238) from an authenticator app, and one-time recovery codes.

A user's secret is stored encrypted (`User.totp_secret`). It waits for a first code before it counts
(`totp_enabled_at`): enrolment shows it as a QR code (rendered here, as SVG) and as text, and the first code
proves the app has it. A code is accepted for the current 30 s step and one step either side (clock drift), and
each step once: `totp_last_step` only moves forward, by a compare-and-set, so a code seen over a shoulder or
replayed by two requests at once signs in once. Ten recovery codes, each good once, are made at enrolment and
shown once; only their SHA-256 is kept (they are random, 80 bits each, so a plain hash is enough).

PORTAL_REQUIRE_2FA_FOR names the roles that must have two factors; a user of such a role without them is sent to
enrolment by `portal.auth.views` before any other page. Services here add and flush; the caller commits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Literal

import pyotp
from flask import current_app
from sqlalchemy import delete, func, or_, select, update

from portal import qr
from portal.audit.service import Actor, record
from portal.auth import sessions
from portal.auth.models import RecoveryCode
from portal.errors import DomainError
from portal.extensions import db
from portal.tenancy.models import User
from portal.types import utcnow

ISSUER = "VPN portal"
STEP = 30  # seconds per code (what every authenticator app uses)
DRIFT = 1  # steps either side of now that are accepted
RECOVERY_CODES = 10


def enabled(user: User) -> bool:
    """Whether the user signs in with a second factor."""
    return user.totp_enabled_at is not None and user.totp_secret is not None


def required_for(user: User) -> bool:
    """Whether the user's role must sign in with a second factor (PORTAL_REQUIRE_2FA_FOR)."""
    return user.role.value in current_app.config["PORTAL_REQUIRE_2FA_FOR"]


def verify_fresh_totp(user: User, code: str) -> bool:
    """Whether `code` is the user's current TOTP code (a recovery code is not), using up its step: the same code
    twice is refused. For signing in, and for actions that ask for a fresh code."""
    if not enabled(user):
        return False
    step = _matching_step(user.totp_secret, code)
    return step is not None and _use_step(user, step)


def verify_login_code(user: User, code: str) -> bool:
    """Whether `code` is the user's current TOTP code or one of their unused recovery codes, using it up."""
    return use_login_code(user, code) is not None


def use_login_code(user: User, code: str) -> Literal["totp", "recovery"] | None:
    """Like `verify_login_code`, saying which kind of code it was."""
    if not enabled(user):
        return None
    if _six_digits(code) is not None:
        return "totp" if verify_fresh_totp(user, code) else None
    return "recovery" if _use_recovery_code(user, code) else None


def reset(actor: Actor, user: User) -> None:
    """Clear the user's second factor (secret, last step, recovery codes) and end their sign-in sessions; a role
    that requires two factors enrols again at the next sign-in. The caller commits."""
    _clear(user)
    record("user.two_factor_reset", actor, tenant_id=user.tenant_id, target=user, details={"email": user.email})
    sessions.end_all(user.id)


# Enrolment and the account page.

def new_secret() -> str:
    return pyotp.random_base32()  # 32 base32 characters: 160 bits, as RFC 4226 recommends


def pending_secret(user: User) -> str:
    """The secret the user is enrolling with (made now if there is none yet); it counts once `confirm` sees a
    code from it."""
    if enabled(user):
        raise DomainError("Two factors are on already.")
    if not user.totp_secret:
        user.totp_secret = new_secret()
        user.totp_last_step = None
    return user.totp_secret


def provisioning_uri(user: User, secret: str) -> str:
    return pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=user.email, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The QR code of `uri` as inline SVG, rendered here: the secret never goes to a third-party QR service."""
    return qr.qr_svg(uri, "QR code for your authenticator app")


def confirm(actor: Actor, user: User, code: str) -> list[str]:
    """Turn two factors on with the pending secret, if `code` comes from it; the new recovery codes (show them
    once). The code's step is used up, so it cannot sign in afterwards."""
    if enabled(user) or not user.totp_secret:
        raise DomainError("There is no enrolment waiting for a code: reload the page.")
    step = _matching_step(user.totp_secret, code)
    if step is None:
        raise DomainError("That code does not match. Check the time on your phone and enter the code the app "
                          "shows now.")
    user.totp_last_step = step
    return enable(actor, user, user.totp_secret)


def enable(actor: Actor, user: User, secret: str) -> list[str]:
    """Turn two factors on with `secret` (enrolment, and `flask seed-demo`); the new recovery codes."""
    user.totp_secret = secret
    user.totp_enabled_at = utcnow()
    codes = _new_recovery_codes(user)
    record("user.two_factor_enabled", actor, tenant_id=user.tenant_id, target=user,
           details={"email": user.email, "recovery_codes": len(codes)})
    return codes


def regenerate_recovery_codes(actor: Actor, user: User) -> list[str]:
    """Ten new recovery codes; the old ones stop working."""
    if not enabled(user):
        raise DomainError("Two factors are off: there are no recovery codes to replace.")
    codes = _new_recovery_codes(user)
    record("user.recovery_codes_regenerated", actor, tenant_id=user.tenant_id, target=user,
           details={"email": user.email, "recovery_codes": len(codes)})
    return codes


def disable(actor: Actor, user: User) -> None:
    """Turn the user's own second factor off, where their role allows it."""
    if required_for(user):
        raise DomainError(f"Your role ({user.role.label}) must sign in with two factors: they cannot be turned "
                          "off. Another admin can reset them if you lost your phone.")
    if not enabled(user):
        raise DomainError("Two factors are off already.")
    _clear(user)
    record("user.two_factor_disabled", actor, tenant_id=user.tenant_id, target=user, details={"email": user.email})


def recovery_codes_left(user: User) -> int:
    return db.session.scalar(select(func.count()).select_from(RecoveryCode)
                             .where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None)))


def recovery_code_used(actor: Actor, user: User) -> int:
    """Audit a sign-in with a recovery code; how many are left."""
    left = recovery_codes_left(user)
    record("user.recovery_code_used", actor, tenant_id=user.tenant_id, target=user,
           details={"email": user.email, "recovery_codes_left": left})
    return left


# Codes.

def _six_digits(code: str) -> str | None:
    cleaned = "".join(code.split())
    return cleaned if len(cleaned) == 6 and cleaned.isascii() and cleaned.isdigit() else None


def _matching_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The 30 s step within the accepted drift whose code `code` is, or None."""
    digits = _six_digits(code)
    if digits is None:
        return None
    totp = pyotp.TOTP(secret, interval=STEP)
    current = int(time.time() if now is None else now) // STEP
    found = None
    for step in range(current - DRIFT, current + DRIFT + 1):  # all of them, so the time taken tells nothing
        if hmac.compare_digest(totp.generate_otp(step), digits):
            found = step
    return found


def _use_step(user: User, step: int) -> bool:
    """Move the user's last used step forward to `step`, if it is behind: one request wins a code."""
    users = User.__table__
    moved = db.session.execute(
        update(users).where(users.c.id == user.id, users.c.totp_enabled_at.is_not(None),
                            or_(users.c.totp_last_step.is_(None), users.c.totp_last_step < step))
        .values(totp_last_step=step)
    ).rowcount
    db.session.expire(user, ["totp_last_step"])
    return moved == 1


def _normalize_recovery_code(code: str) -> str:
    return "".join(character for character in code.lower() if character.isalnum())


def _hash_recovery_code(code: str) -> str:
    return hashlib.sha256(_normalize_recovery_code(code).encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = base64.b32encode(secrets.token_bytes(10)).decode().lower()  # 16 characters, 80 bits
    return "-".join(raw[index:index + 4] for index in range(0, 16, 4))


def _new_recovery_codes(user: User) -> list[str]:
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    db.session.add_all(RecoveryCode(user_id=user.id, code_hash=_hash_recovery_code(code)) for code in codes)
    db.session.flush()
    return codes


def _use_recovery_code(user: User, code: str) -> bool:
    normalized = _normalize_recovery_code(code)
    if len(normalized) != 16:
        return False
    codes = RecoveryCode.__table__
    used = db.session.execute(
        update(codes).where(codes.c.user_id == user.id, codes.c.code_hash == _hash_recovery_code(normalized),
                            codes.c.used_at.is_(None))
        .values(used_at=utcnow())
    ).rowcount
    return used >= 1


def _clear(user: User) -> None:
    user.totp_secret = None
    user.totp_enabled_at = None
    user.totp_last_step = None
    db.session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
