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
from sqlalchemy import select, update

from portal.auth.models import LoginSession
from portal.extensions import db
from portal.tenancy.models import User
from portal.types import utcnow

TOUCH_EVERY = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User, ip: str | None) -> str:
    """A new session for `user` (in the caller's transaction); the token for the cookie."""
    token = secrets.token_urlsafe(32)
    db.session.add(LoginSession(token_hash=_hash(token), user_id=user.id, ip=ip))
    return token


def user_for(token: str | None, user_id: int) -> User | None:
    """The user of a live session, or None; a session in use is marked as seen."""
    if not token:
        return None
    config, now = current_app.config, utcnow()
    found = db.session.execute(
        select(User, LoginSession.id, LoginSession.last_seen_at).join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == _hash(token), User.id == user_id, User.active.is_(True),
               LoginSession.revoked_at.is_(None),
               LoginSession.last_seen_at > now - timedelta(minutes=config["PORTAL_SESSION_IDLE_MINUTES"]),
               LoginSession.created_at > now - timedelta(hours=config["PORTAL_SESSION_MAX_HOURS"]))
    ).first()
    if found is None:
        return None
    user, session_id, last_seen = found
    if now - last_seen > TOUCH_EVERY:
        db.session.execute(update(LoginSession).where(LoginSession.id == session_id).values(last_seen_at=now))
        db.session.commit()  # the first statement of the request: nothing else rides on this commit
    return user


def end(token: str) -> None:
    db.session.execute(update(LoginSession).where(LoginSession.token_hash == _hash(token),
                                                  LoginSession.revoked_at.is_(None)).values(revoked_at=utcnow()))


def end_all(user_id: int) -> None:
    """Every open session of the user (deactivation, a change of role)."""
    db.session.execute(update(LoginSession).where(LoginSession.user_id == user_id,
                                                  LoginSession.revoked_at.is_(None)).values(revoked_at=utcnow()))
