"""Creating tenants and users (platform admins, and the `flask tenants` / `flask users` commands)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import func, select

from portal import live
from portal.audit.service import Actor, record
from portal.auth import sessions
from portal.auth.service import check_password_strength, hash_password
from portal.errors import Conflict, DomainError
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
    email = email.strip().lower()
    if not EMAIL.fullmatch(email) or len(email) > 254:
        raise DomainError("Enter a valid e-mail address.")
    try:
        check_password_strength(password)
    except ValueError as error:
        raise DomainError(str(error)) from error
    if (role == Role.TENANT_ADMIN) != (tenant_id is not None):
        raise DomainError("Tenant admins belong to exactly one tenant; platform staff belong to none.")
    if tenant_id is not None and db.session.get(Tenant, tenant_id) is None:
        raise DomainError("No such tenant.")
    if db.session.scalar(select(func.count()).where(User.email == email)):
        raise Conflict(f"A user with the address {email} exists already.")
    user = User(email=email, password_hash=hash_password(password), role=role, tenant_id=tenant_id)
    db.session.add(user)
    db.session.flush()
    record("user.created", actor, tenant_id=tenant_id, target=user, details={"email": email, "role": role.value})
    return user


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
