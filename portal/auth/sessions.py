"""Starting, checking and ending sign-in sessions (`LoginSession`).

A session is refused once it is ended (logout; the user's deactivation or change of role ends all of theirs),
idle for PORTAL_SESSION_IDLE_MINUTES, or older than PORTAL_SESSION_MAX_HOURS, and whenever its user is
deactivated. Its last use is written at most once a minute.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from flask import current_app
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import joinedload

from portal.auth.models import LoginSession
from portal.extensions import db
from portal.tenancy.impersonation import end_for_sessions
from portal.tenancy.models import User
from portal.types import utcnow

TOUCH_EVERY = timedelta(minutes=1)


# The conditions of a session that still signs its user in, its moments as parameters (`_limits`), so that
# the statement every request runs is built once.
_LIVE = (LoginSession.revoked_at.is_(None), LoginSession.last_seen_at > bindparam("idle_since"),
         LoginSession.created_at > bindparam("started_since"))
_SIGNED_IN = (
    select(User, LoginSession.id, LoginSession.last_seen_at).join(LoginSession, LoginSession.user_id == User.id)
    .options(joinedload(User.tenant))  # every page's header names it: one statement, not two
    .where(LoginSession.token_hash == bindparam("token_hash"), User.id == bindparam("user_id"),
           User.active.is_(True), *_LIVE))


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User, ip: str | None, user_agent: str | None) -> str:
    """A new session for `user` (in the caller's transaction); the token for the cookie. The browser's
    User-Agent is kept (cut to 200 characters) so its owner can tell their sessions apart."""
    token = secrets.token_urlsafe(32)
    db.session.add(LoginSession(token_hash=_hash(token), user_id=user.id, ip=ip,
                                user_agent=(user_agent or "")[:200] or None))
    return token


def user_for(token: str | None, user_id: int) -> tuple[User, int] | None:
    """The user of a live session and the session's id, or None; a session in use is marked as seen."""
    if not token:
        return None
    now = utcnow()
    found = db.session.execute(_SIGNED_IN, {"token_hash": _hash(token), "user_id": user_id, **_limits(now)}).first()
    if found is None:
        return None
    user, session_id, last_seen = found
    if now - last_seen > TOUCH_EVERY:
        db.session.execute(update(LoginSession).where(LoginSession.id == session_id).values(last_seen_at=now))
        db.session.commit()  # the first statement of the request: nothing else rides on this commit
    return user, session_id


def end(token: str) -> int | None:
    """End the session of `token` (and what it was impersonating); its id, for disconnecting its sockets, or
    None if it was not live."""
    ended = _revoke(LoginSession.token_hash == _hash(token))
    return ended[0] if ended else None


def end_all(user_id: int) -> None:
    """Every open session of the user (deactivation, a change of role)."""
    _revoke(LoginSession.user_id == user_id)


def _revoke(*conditions) -> list[int]:
    ended = list(db.session.scalars(update(LoginSession).where(*conditions, LoginSession.revoked_at.is_(None))
                                    .values(revoked_at=utcnow()).returning(LoginSession.id)))
    end_for_sessions(ended, "session ended")
    return ended


def _limits(now) -> dict:
    """The parameters of `_LIVE` at `now`."""
    config = current_app.config
    return {"idle_since": now - timedelta(minutes=config["PORTAL_SESSION_IDLE_MINUTES"]),
            "started_since": now - timedelta(hours=config["PORTAL_SESSION_MAX_HOURS"])}


def session_id_for(token: str | None) -> int | None:
    """The id of the session a cookie's token names (live or not), or None."""
    if not token:
        return None
    return db.session.scalar(select(LoginSession.id).where(LoginSession.token_hash == _hash(token)))


def live_sessions(user_id: int) -> list[LoginSession]:
    """The user's sessions that still sign them in, newest use first."""
    newest_first = (LoginSession.last_seen_at.desc(), LoginSession.id.desc())
    return list(db.session.scalars(select(LoginSession).where(LoginSession.user_id == user_id, *_LIVE)
                                   .order_by(*newest_first), _limits(utcnow())))


def end_one(user_id: int, login_session_id: int) -> bool:
    """End one of the user's sessions (another user's id ends nothing); whether it was live."""
    return bool(_revoke(LoginSession.id == login_session_id, LoginSession.user_id == user_id))


def end_others(user_id: int, keep_login_session_id: int | None) -> list[int]:
    """End every session of the user but `keep_login_session_id` (a password change); the ids ended."""
    conditions = [LoginSession.user_id == user_id]
    if keep_login_session_id is not None:
        conditions.append(LoginSession.id != keep_login_session_id)
    return _revoke(*conditions)
