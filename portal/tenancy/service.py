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
from sqlalchemy import ForeignKey, Table, delete, func, select
from sqlalchemy.orm import selectinload

from portal import live, mail
from portal.audit.service import Actor, record
from portal.auth import sessions
from portal.auth.models import AccountToken, LoginSession, TokenPurpose
from portal.auth.service import check_password_strength, hash_password
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.tenancy.models import Impersonation, Role, Tenant, User

TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .&'_-]{0,79}")


def create_tenant(actor: Actor, name: str) -> Tenant:
    tenant = Tenant(name=_tenant_name(name))
    db.session.add(tenant)
    db.session.flush()
    record("tenant.created", actor, tenant_id=tenant.id, target=tenant, details={"name": tenant.name})
    return tenant


def rename_tenant(actor: Actor, tenant: Tenant, name: str) -> Tenant:
    """A new name (unique regardless of case); the tenant's admins see the change in its audit log."""
    name, before = _tenant_name(name, keep=tenant), tenant.name
    if name != before:
        tenant.name = name
        record("tenant.renamed", actor, tenant_id=tenant.id, target=tenant, details={"before": before, "after": name})
    return tenant


def _tenant_name(name: str, keep: Tenant | None = None) -> str:
    """`name` cleaned and checked: the rule, and no other tenant's name (`keep` may keep its own)."""
    name = (name or "").strip()
    if not TENANT_NAME.fullmatch(name):
        raise FieldError("name", "Tenant names are 1 to 80 letters, digits, spaces and . & ' _ -")
    taken = db.session.scalar(select(Tenant.id).where(func.lower(Tenant.name) == name.lower()))
    if taken is not None and (keep is None or taken != keep.id):
        raise Conflict(f"A tenant named {name!r} exists already.")
    return name


LISTED_NAMES = 10  # in a refusal, the names of what is still live


def removal_blockers(tenant_id: int) -> list[str]:
    """Why the tenant cannot be removed yet: its configurations and clients that are not revoked (their peers and
    certificates live on hubs and servers, which only a revocation cleans up). Empty when it can be."""
    from portal.openvpn.models import VpnClient
    from portal.wireguard.models import Router, VpnConfiguration

    routers = db.session.scalars(select(Router.name).join(VpnConfiguration, VpnConfiguration.router_id == Router.id)
                                 .where(Router.tenant_id == tenant_id, VpnConfiguration.status != "revoked")
                                 .order_by(func.lower(Router.name))).all()
    clients = db.session.scalars(select(VpnClient.name).where(VpnClient.tenant_id == tenant_id,
                                                             VpnClient.status != "revoked")
                                 .order_by(func.lower(VpnClient.name))).all()
    return [f"{_count(len(names), what)} not revoked: {_listed(names)}."
            for names, what in ((routers, "router configuration"), (clients, "OpenVPN client")) if names]


def _count(number: int, what: str) -> str:
    return f"{number} {what} is" if number == 1 else f"{number} {what}s are"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:LISTED_NAMES])
    return shown if len(names) <= LISTED_NAMES else f"{shown} and {len(names) - LISTED_NAMES} more"


def remove_tenant(actor: Actor, tenant: Tenant) -> list[int]:
    """Remove a tenant whose configurations and clients are all revoked, with every row that belongs to it: its
    users (their sessions end and their pages disconnect), routers, revoked configurations and clients, tokens,
    links and its subnet, which is free again. Running support visits to it end first. Audit events stay: the
    log is not the tenant's, and its chain holds. The ids of the managed hubs that held its subnet (to bootstrap)."""
    from portal.ipam.models import TenantSubnet
    from portal.tenancy.impersonation import end
    from portal.wireguard.models import Hub

    # Locked first: on PostgreSQL a router or client being added for it (its foreign key) waits until this ends.
    db.session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update())
    blockers = removal_blockers(tenant.id)
    if blockers:
        raise Conflict(f"{tenant.name} still has live VPN access: " + " ".join(blockers)
                       + " Its admins (or support staff on a visit that allows changes) revoke them first.")
    subnet = db.session.scalar(select(TenantSubnet).where(TenantSubnet.tenant_id == tenant.id))
    details = {"name": tenant.name, "users": [user.email for user in tenant.users],
               "subnet": subnet.network if subnet is not None else None}
    hub_ids = [subnet.hub_id] if subnet is not None and db.session.get(Hub, subnet.hub_id).managed else []
    running = db.session.scalars(select(Impersonation).where(Impersonation.tenant_id == tenant.id,
                                                             Impersonation.ended_at.is_(None))).all()
    for visit in running:
        end(actor, visit, "tenant removed")
    for user in tenant.users:
        live.user_access_changed(user.id)
    _delete_with_dependents(Tenant.__table__, Tenant.id == tenant.id)
    record("tenant.removed", actor, tenant_id=None, target=tenant, details=details)
    return hub_ids


def _delete_with_dependents(table: Table, where) -> None:
    """Delete the rows of `table` that match `where`, after every row that refers to them, however indirectly.
    The references come from the models' foreign keys, so a table added later goes with its tenant instead of
    blocking the removal. (The audit log has no foreign keys: it keeps every event.)"""
    for foreign_key in _references_to(table):
        column = foreign_key.parent
        _delete_with_dependents(column.table, column.in_(select(foreign_key.column).where(where)))
    db.session.execute(delete(table).where(where))


def _references_to(table: Table) -> list[ForeignKey]:
    return [foreign_key for other in db.metadata.sorted_tables for foreign_key in other.foreign_keys
            if foreign_key.column.table is table]


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
    if not mail.is_address(email):
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
