"""Tenants and users: creating tenants, inviting users and managing their access (platform admins for everyone,
tenant admins for their own tenant), and the `flask tenants` / `flask users` commands."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from portal import live, mail
from portal.audit.service import Actor, record
from portal.auth import sessions
from portal.auth.models import AccountToken, LoginSession, TokenPurpose
from portal.auth.service import check_password_strength, hash_password
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.tenancy.models import Role, Tenant, User

TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .&'_-]{0,79}")
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def create_tenant(actor: Actor, name: str) -> Tenant:
    name = name.strip()
    if not TENANT_NAME.fullmatch(name):
        raise DomainError("Tenant names are 1 to 80 letters, digits, spaces and . & ' _ -")
    if db.session.scalar(select(func.count()).where(func.lower(Tenant.name) == name.lower())):
        raise Conflict(f"A tenant named {name!r} exists already.")
    tenant = Tenant(name=name)
    db.session.add(tenant)
    db.session.flush()
    record("tenant.created", actor, tenant_id=tenant.id, target=tenant, details={"name": name})
    return tenant


def create_user(actor: Actor, email: str, password: str, role: Role, tenant_id: int | None) -> User:
    """A user with a password chosen for them (`flask users create`, the demo seed, tests); pages invite."""
    email = _new_email(email)
    try:
        check_password_strength(password)
    except ValueError as error:
        raise DomainError(str(error)) from error
    _check_placement(role, tenant_id)
    user = User(email=email, password_hash=hash_password(password), role=role, tenant_id=tenant_id)
    db.session.add(user)
    db.session.flush()
    record("user.created", actor, tenant_id=tenant_id, target=user, details={"email": email, "role": role.value})
    return user


def _new_email(email: str) -> str:
    email = (email or "").strip().lower()
    if not EMAIL.fullmatch(email) or len(email) > 254:
        raise FieldError("email", "Enter a valid e-mail address.")
    if db.session.scalar(select(func.count()).where(func.lower(User.email) == email)):
        raise Conflict(f"A user with the address {email} exists already.")
    return email


def _check_placement(role: Role, tenant_id: int | None) -> None:
    if (role == Role.TENANT_ADMIN) != (tenant_id is not None):
        raise FieldError("tenant_id", "Tenant admins belong to exactly one tenant; platform staff belong to none.")
    if tenant_id is not None and db.session.get(Tenant, tenant_id) is None:
        raise FieldError("tenant_id", "No such tenant.")


# Builds the absolute URL of a one-time link from its kind and token (views pass `url_for`; services never
# read the request).
LinkBuilder = Callable[[TokenPurpose, str], str]


@dataclass(frozen=True)
class Sent:
    """A user and the e-mail sent to them: `outbox` is the `.eml` written when no mail server is set."""

    user: User
    email: str
    purpose: TokenPurpose
    outbox: Path | None


def invite_user(actor: Actor, email: str, role: Role, tenant_id: int | None, link: LinkBuilder) -> Sent:
    """Create the user with a password nobody knows and e-mail them a one-time link to set theirs. A mail
    failure raises (MailError), so the caller's rollback leaves no user behind."""
    email = _new_email(email)
    _check_placement(role, tenant_id)
    # A real scrypt hash of a random password nobody is told: signing in costs as long as for anyone else.
    user = User(email=email, password_hash=hash_password(secrets.token_urlsafe(32)), role=role, tenant_id=tenant_id)
    db.session.add(user)
    db.session.flush()  # a concurrent twin's unique e-mail fails here, before any e-mail goes out
    hours = current_app.config["PORTAL_INVITE_HOURS"]
    from portal.account.service import issue_link

    token = issue_link(actor, user, TokenPurpose.INVITE, hours)
    record("user.invited", actor, tenant_id=tenant_id, target=user,
           details={"email": email, "role": role.value, "expires_in_hours": hours})
    url = link(TokenPurpose.INVITE, token)
    return Sent(user, email, TokenPurpose.INVITE, _mail_link(actor, user, TokenPurpose.INVITE, url, hours))


def send_password_link(actor: Actor, user: User, link: LinkBuilder) -> Sent:
    """E-mail the user a one-time link to set a new password; to someone who never accepted their invitation,
    a new invitation. Their older links of the same kind stop working."""
    if not user.active:
        raise Conflict(f"{user.email} is deactivated: reactivate the account first.")
    from portal.account.service import issue_link

    invited = invitation_pending(user.id)
    purpose = TokenPurpose.INVITE if invited else TokenPurpose.PASSWORD_RESET
    hours = current_app.config["PORTAL_INVITE_HOURS" if invited else "PORTAL_PASSWORD_RESET_HOURS"]
    token = issue_link(actor, user, purpose, hours)
    record("user.invite_resent" if invited else "user.password_reset_sent", actor, tenant_id=user.tenant_id,
           target=user, details={"expires_in_hours": hours})
    return Sent(user, user.email, purpose, _mail_link(actor, user, purpose, link(purpose, token), hours))


MAILS = {TokenPurpose.INVITE: ("invite", "You are invited to the VPN portal"),
         TokenPurpose.PASSWORD_RESET: ("password_reset", "Set a new password for the VPN portal")}


def _mail_link(actor: Actor, user: User, purpose: TokenPurpose, url: str, hours: int) -> Path | None:
    template, subject = MAILS[purpose]
    return mail.send_template(user.email, subject, template, link=url, hours=hours, inviter=actor.label,
                              email=user.email, role=user.role.label, tenant=user.tenant.name if user.tenant else None)


def invitation_pending(user_id: int) -> bool:
    """Whether the user was invited and has not set a password through any invitation yet."""
    counts = db.session.execute(
        select(func.count(), func.count(AccountToken.used_at))
        .where(AccountToken.user_id == user_id, AccountToken.purpose == TokenPurpose.INVITE)).one()
    return counts[0] > 0 and counts[1] == 0


def set_active(actor: Actor, user: User, active: bool) -> User:
    """Deactivate (every session ends, live connections close) or reactivate a user; never oneself."""
    if actor.user_id == user.id:
        raise DomainError("You cannot deactivate or reactivate your own account; ask another admin.")
    if user.active == active:
        raise Conflict(f"{user.email} is {'active' if active else 'deactivated'} already.")
    return change_access(actor, user, user.role, user.tenant_id, active)


def change_role(actor: Actor, user: User, role: Role, tenant_id: int | None) -> User:
    """A new role (and tenant, for tenant admins); the user's sessions end. Platform admins only; never oneself."""
    if actor.user_id == user.id:
        raise DomainError("You cannot change your own role; ask another platform admin.")
    _check_placement(role, tenant_id)
    if (role, tenant_id) == (user.role, user.tenant_id):
        raise Conflict(f"{user.email} has that role already.")
    return change_access(actor, user, role, tenant_id, user.active)


def reset_two_factor(actor: Actor, user: User) -> None:
    """Remove the user's second factor (a lost phone); they enrol again at their next sign-in. Never one's own
    (that is Account -> Two factors, which asks for a code)."""
    if actor.user_id == user.id:
        raise DomainError("Reset your own two factors from your account page.")
    try:
        from portal.auth.two_factor import reset
    except ImportError as error:
        raise DomainError("Two factors are not available in this version.") from error
    reset(actor, user)  # audited there; it ends the user's sessions
    live.user_access_changed(user.id)  # and their open pages' connections, after the commit


@dataclass(frozen=True)
class UserRow:
    """A user as the user lists show them."""

    user: User
    last_sign_in: datetime | None
    invitation_pending: bool
    two_factor: bool | None  # None: not known (two factors not available)


def users_overview(tenant_id: int | None) -> list[UserRow]:
    """Every user (tenant_id None: platform admins' list) or one tenant's users, with their last sign-in,
    whether they still have to accept an invitation, and whether they enrolled a second factor."""
    last_sign_in = (select(LoginSession.user_id, func.max(LoginSession.created_at).label("at"))
                    .group_by(LoginSession.user_id).subquery())
    invites = (select(AccountToken.user_id, func.count().label("sent"), func.count(AccountToken.used_at).label("used"))
               .where(AccountToken.purpose == TokenPurpose.INVITE).group_by(AccountToken.user_id).subquery())
    query = (select(User, last_sign_in.c.at, invites.c.sent, invites.c.used)
             .outerjoin(last_sign_in, last_sign_in.c.user_id == User.id)
             .outerjoin(invites, invites.c.user_id == User.id).options(selectinload(User.tenant)).order_by(User.email))
    if tenant_id is not None:
        query = query.where(User.tenant_id == tenant_id)
    found = db.session.execute(query).all()
    enrolled = _two_factor_enrolled([row[0] for row in found])
    return [UserRow(user, at, bool(sent) and not used, enrolled.get(user.id) if enrolled is not None else None)
            for user, at, sent, used in found]


def user_row(user: User) -> UserRow:
    at = db.session.scalar(select(func.max(LoginSession.created_at)).where(LoginSession.user_id == user.id))
    enrolled = _two_factor_enrolled([user])
    return UserRow(user, at, invitation_pending(user.id), enrolled.get(user.id) if enrolled is not None else None)


def _two_factor_enrolled(users: Sequence[User]) -> dict[int, bool] | None:
    """Whether each user has a second factor, or None while two factors are not available."""
    try:
        from portal.auth.two_factor import enabled
    except ImportError:
        return None
    return {user.id: enabled(user) for user in users}


def change_access(actor: Actor, user: User, role: Role, tenant_id: int | None, active: bool) -> User:
    """A user's role, tenant and whether the account is active. Their open pages lose their live connection
    after the commit and reconnect under the new access, or not at all."""
    if (role == Role.TENANT_ADMIN) != (tenant_id is not None):
        raise DomainError("Tenant admins belong to exactly one tenant; platform staff belong to none.")
    if tenant_id is not None and db.session.get(Tenant, tenant_id) is None:
        raise DomainError("No such tenant.")
    before = {"role": user.role.value, "tenant_id": user.tenant_id, "active": user.active}
    user.role, user.tenant_id, user.active = role, tenant_id, active
    after = {"role": role.value, "tenant_id": tenant_id, "active": active}
    if after != before:
        record("user.access_changed", actor, tenant_id=before["tenant_id"], target=user,
               details={"before": before, "after": after})
        sessions.end_all(user.id)  # signed in again under the new access, or not at all
        live.user_access_changed(user.id)
    return user


def all_tenants() -> Sequence[Tenant]:
    return db.session.scalars(select(Tenant).order_by(Tenant.name)).all()


def all_users() -> Sequence[User]:
    return db.session.scalars(select(User).order_by(User.email)).all()


def tenant_by_name(name: str) -> Tenant | None:
    return db.session.scalar(select(Tenant).where(func.lower(Tenant.name) == name.strip().lower()))
