"""API tokens: made by a tenant's admins, shown once, kept as a SHA-256, revoked for good.

Views call these with explicit arguments; they add and flush, and the caller commits.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import exists, func, select, update

from portal.api.models import ApiToken, Scope
from portal.audit.service import Actor, record
from portal.errors import Conflict, FieldError
from portal.extensions import db
from portal.types import utcnow

PREFIX = "vpt_"  # recognisable in a leaked config or a secret scanner's rule
TOKEN_BYTES = 32
TOKEN_SHAPE = re.compile(r"vpt_[A-Za-z0-9_-]{43}")
TOKEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
TOKEN_NAME_RULE = "1 to 64 characters: letters, digits, spaces, dots, dashes and underscores"
# Expiry choices offered by the form, in days; None is "never".
EXPIRY_DAYS = (7, 30, 90, 365, None)
# `last_used_at` is written at most this often per token (and whenever the client's address changes).
TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Created:
    token: ApiToken
    secret: str  # the token itself: shown once, never stored


def create(actor: Actor, tenant_id: int, name: str, scope: str, expires_in_days: int | None) -> Created:
    name = name.strip()
    if not TOKEN_NAME.fullmatch(name):
        raise FieldError("name", f"Token names are {TOKEN_NAME_RULE}.")
    if scope not in tuple(Scope):
        raise FieldError("scope", "The scope is read or write.")
    if expires_in_days not in EXPIRY_DAYS:
        raise FieldError("expires_in_days", "Choose one of the offered expiries.")
    if db.session.scalar(select(exists().where(ApiToken.tenant_id == tenant_id, ApiToken.revoked_at.is_(None),
                                               func.lower(ApiToken.name) == name.lower()))):
        raise FieldError("name", f"A token named {name!r} exists already; revoke it or choose another name.")
    secret = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    token = ApiToken(tenant_id=tenant_id, name=name, scope=scope, token_hash=hash_token(secret),
                     created_by=actor.user_id, created_at=now,
                     expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None)
    db.session.add(token)
    db.session.flush()
    record("api_token.created", actor, tenant_id=tenant_id, target=token,
           details={"name": name, "scope": scope,
                    "expires_at": token.expires_at.isoformat() if token.expires_at else None})
    return Created(token, secret)


def revoke(actor: Actor, token: ApiToken) -> None:
    """Revoke for good (a compare-and-set, so two admins revoking at once record it once)."""
    revoked = db.session.execute(update(ApiToken).where(ApiToken.id == token.id, ApiToken.revoked_at.is_(None))
                                 .values(revoked_at=utcnow()).execution_options(synchronize_session=False))
    if revoked.rowcount != 1:
        raise Conflict(f"The token {token.name!r} is revoked already.")
    db.session.refresh(token)
    record("api_token.revoked", actor, tenant_id=token.tenant_id, target=token, details={"name": token.name})


def tokens_of(tenant_id: int) -> list[ApiToken]:
    """The tenant's tokens: live ones first, newest first."""
    return list(db.session.scalars(select(ApiToken).where(ApiToken.tenant_id == tenant_id)
                                   .order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())))


def find(secret: str) -> ApiToken | None:
    """The token whose SHA-256 matches (live or not), or None; a string that is not shaped like a token is
    not looked up."""
    if not TOKEN_SHAPE.fullmatch(secret):
        return None
    return db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))


def touch(token: ApiToken, ip: str | None, now: datetime) -> bool:
    """Note the token's use (at most once a minute, and whenever the address changes); whether it wrote."""
    if token.last_used_at is not None and now - token.last_used_at < TOUCH_EVERY and token.last_used_ip == ip:
        return False
    db.session.execute(update(ApiToken).where(ApiToken.id == token.id)
                       .values(last_used_at=now, last_used_ip=ip).execution_options(synchronize_session=False))
    return True
