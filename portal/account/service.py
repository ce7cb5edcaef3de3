"""One-time links (invitations, password resets), one's own password, and one's own sign-in sessions.

A link carries a random 32-byte token; the database keeps its SHA-256 only. Using a link is a compare-and-set
on `used_at` (`UPDATE ... WHERE used_at IS NULL AND expires_at > now`), so two tabs, or an attacker racing the
owner, cannot both use it. Sending a new link of the same kind makes the user's older ones stop working.
Setting or changing a password ends the user's other sign-in sessions, and their sockets after the commit.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from werkzeug.security import check_password_hash

from portal import live
from portal.audit.service import Actor, record
from portal.auth import sessions
from portal.auth.models import AccountToken, LoginSession, TokenPurpose
from portal.auth.service import authenticate, check_password_strength, hash_password
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.tenancy.models import User
from portal.types import utcnow

TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,100}")


class LinkState(enum.Enum):
    VALID = "valid"
    USED = "used"
    EXPIRED = "expired"
    INACTIVE = "inactive"  # the account was deactivated since the link was sent
    UNKNOWN = "unknown"


class LinkGone(Conflict):
    """The link was used, has expired or was replaced, or its account is deactivated (a 410 page)."""

    code = "gone"


GONE_MESSAGES = {
    LinkState.USED: "This link has been used already: each link works once. If that was not you, tell your "
                    "administrator.",
    LinkState.EXPIRED: "This link has expired, or a newer one was sent since. Ask your administrator for a new one.",
    LinkState.INACTIVE: "This account is deactivated. Ask your administrator.",
}


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_link(actor: Actor, user: User, purpose: TokenPurpose, hours: int) -> str:
    """A new one-time link token for `user` (in the caller's transaction); the user's older unused links of the
    same kind stop working."""
    now = utcnow()
    db.session.execute(update(AccountToken).where(AccountToken.user_id == user.id, AccountToken.purpose == purpose,
                                                  AccountToken.used_at.is_(None), AccountToken.expires_at > now)
                       .values(expires_at=now))
    token = secrets.token_urlsafe(32)
    db.session.add(AccountToken(purpose=purpose, token_hash=_hash(token), user_id=user.id,
                                created_by_id=actor.user_id, created_at=now, expires_at=now + timedelta(hours=hours)))
    return token


@dataclass(frozen=True)
class Link:
    state: LinkState
    row: AccountToken | None = None
    user: User | None = None


def find_link(token: str, purpose: TokenPurpose) -> Link:
    """What a link is, without using it (a GET, which mail scanners may also send)."""
    if not TOKEN_SHAPE.fullmatch(token or ""):
        return Link(LinkState.UNKNOWN)
    row = db.session.scalar(select(AccountToken).where(AccountToken.token_hash == _hash(token),
                                                       AccountToken.purpose == purpose))
    if row is None:
        return Link(LinkState.UNKNOWN)
    user = db.session.get(User, row.user_id)
    if row.used_at is not None:
        state = LinkState.USED
    elif row.expires_at <= utcnow():
        state = LinkState.EXPIRED
    elif not user.active:
        state = LinkState.INACTIVE
    else:
        state = LinkState.VALID
    return Link(state, row, user)


def use_link(token: str, purpose: TokenPurpose, password: str, request_id: str | None, ip: str | None) -> User:
    """Set the user's password through a one-time link and use the link up; every session of the user ends."""
    link = find_link(token, purpose)
    if link.state is LinkState.UNKNOWN:
        raise DomainError("This link is not valid.")
    if link.state is not LinkState.VALID:
        raise LinkGone(GONE_MESSAGES[link.state])
    _check_new_password(password, "password")
    now = utcnow()
    used = db.session.execute(update(AccountToken).where(AccountToken.id == link.row.id,
                                                         AccountToken.used_at.is_(None),
                                                         AccountToken.expires_at > now).values(used_at=now))
    if used.rowcount != 1:  # used or replaced a moment ago, by another tab or another person
        raise LinkGone(GONE_MESSAGES[LinkState.USED])
    user = link.user
    user.password_hash = hash_password(password)
    ended = _end_sessions(user.id, keep=None)
    actor = Actor(user_id=user.id, label=user.email, request_id=request_id, ip=ip)
    record("user.password_set", actor, tenant_id=user.tenant_id, target=user,
           details={"via": purpose.value, "sessions_ended": len(ended)})
    return user


def change_password(actor: Actor, user: User, current: str, new: str, keep_login_session_id: int | None,
                    ip: str) -> int:
    """Change one's own password, knowing the current one (checked like a login: throttled per address); every
    other session of the user ends. How many ended."""
    checked = authenticate(user.email, current, ip)
    if checked.retry_after is not None:
        minutes = max(1, round(checked.retry_after / 60))
        raise FieldError("current_password", f"Too many wrong passwords. Try again in about {minutes} minute(s).")
    if checked.user is None or checked.user.id != user.id:
        raise FieldError("current_password", "That is not your current password.")
    _check_new_password(new, "new_password")
    if check_password_hash(user.password_hash, new):
        raise FieldError("new_password", "Choose a password different from your current one.")
    user.password_hash = hash_password(new)
    ended = _end_sessions(user.id, keep=keep_login_session_id)
    record("user.password_changed", actor, tenant_id=user.tenant_id, target=user,
           details={"other_sessions_ended": len(ended)})
    return len(ended)


def _check_new_password(password: str, field: str) -> None:
    try:
        check_password_strength(password)
    except ValueError as error:
        raise FieldError(field, str(error)) from error


def _end_sessions(user_id: int, keep: int | None) -> list[int]:
    ended = sessions.end_others(user_id, keep)
    for login_session_id in ended:
        live.session_ended(login_session_id)  # its sockets, after the commit, on every web process
    return ended


def my_sessions(user: User) -> list[LoginSession]:
    return sessions.live_sessions(user.id)


def end_my_session(actor: Actor, user: User, login_session_id: int, current_login_session_id: int | None) -> None:
    """End one of one's own other sessions (another user's id is "no such session")."""
    if login_session_id == current_login_session_id:
        raise DomainError("This is the session you are using: log out to end it.")
    if not sessions.end_one(user.id, login_session_id):
        raise Conflict("That session has ended already.")
    live.session_ended(login_session_id)
    record("user.session_ended", actor, tenant_id=user.tenant_id, target=user,
           details={"login_session_id": login_session_id})


def end_my_other_sessions(actor: Actor, user: User, current_login_session_id: int | None) -> int:
    ended = _end_sessions(user.id, keep=current_login_session_id)
    if ended:
        record("user.sessions_ended", actor, tenant_id=user.tenant_id, target=user,
               details={"login_session_ids": ended})
    return len(ended)
