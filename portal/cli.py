"""`flask` commands: tenants, users, demo seed, keys, audit; and each area's own (`hub`, `reconcile`, `openvpn`)."""

from __future__ import annotations

import secrets
from typing import NamedTuple

import click
from cryptography.fernet import Fernet
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import Text, literal, select, type_coerce

from portal.actions import commit_or_exit
from portal.audit.service import Actor, verify_chain
from portal.auth import two_factor
from portal.crypto import EncryptedText, current_keyring
from portal.doctor import doctor_command
from portal.errors import DomainError
from portal.extensions import db
from portal.openvpn.cli import openvpn_cli
from portal.tenancy import service as tenancy
from portal.tenancy.models import Role, User
from portal.wireguard.cli import hub_cli, reconcile_command

CLI_ACTOR = Actor.system("cli")
DEMO_TENANT = "Demo ISP"
DEMO_ADMIN = "admin@demo.example"
PLATFORM_ADMIN = "platform@demo.example"
SUPPORT = "support@demo.example"

tenants_cli = AppGroup("tenants", help="Create and list tenants.")
users_cli = AppGroup("users", help="Create and list users.")
keys_cli = AppGroup("keys", help="Encryption keys for secrets at rest.")
audit_cli = AppGroup("audit", help="The tamper-evident audit log.")


@tenants_cli.command("create")
@click.argument("name")
def create_tenant(name: str) -> None:
    tenant = commit_or_exit(lambda: tenancy.create_tenant(CLI_ACTOR, name))
    click.echo(f"tenant {tenant.id}: {tenant.name}")


@tenants_cli.command("list")
def list_tenants() -> None:
    for tenant in tenancy.all_tenants():
        click.echo(f"{tenant.id}\t{tenant.name}")


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice([role.value for role in Role]), default=Role.TENANT_ADMIN.value)
@click.option("--tenant", "tenant_name", help="Tenant name (tenant admins only).")
@click.password_option(help="At least 12 characters, not a common one; asked for when not given.")
def create_user(email: str, role: str, tenant_name: str | None, password: str) -> None:
    def create():
        tenant_id = None
        if tenant_name:
            tenant = tenancy.tenant_by_name(tenant_name)
            if tenant is None:
                raise DomainError(f"No tenant named {tenant_name!r}.")
            tenant_id = tenant.id
        return tenancy.create_user(CLI_ACTOR, email, password, Role(role), tenant_id)

    user = commit_or_exit(create)
    click.echo(f"user {user.id}: {user.email} ({user.role.value})")


@users_cli.command("list")
def list_users() -> None:
    for user in tenancy.all_users():
        click.echo(f"{user.id}\t{user.email}\t{user.role.value}\t{user.tenant.name if user.tenant else '-'}")


class DemoAccount(NamedTuple):
    role: str
    email: str
    password: str
    totp_secret: str | None  # staff sign in with two factors, enrolled with this secret

    def lines(self) -> list[str]:
        """How to sign in as this account, for the terminal."""
        lines = [f"{self.role}: {self.email}  password: {self.password}"]
        if self.totp_secret:
            lines += [f"  two-factor secret: {self.totp_secret} (for an authenticator app); the current code:",
                      f"  .venv/bin/python -c \"import pyotp; print(pyotp.TOTP('{self.totp_secret}').now())\""]
        return lines


def seed_demo() -> list[DemoAccount]:
    """The demo tenant, its admin, a platform admin and a support user, each made once (staff enrolled in two
    factors when their role requires it). Returns the accounts it made, with their passwords and secrets."""
    tenant = tenancy.tenant_by_name(DEMO_TENANT) or tenancy.create_tenant(CLI_ACTOR, DEMO_TENANT)
    created = []
    for email, role, tenant_id in ((DEMO_ADMIN, Role.TENANT_ADMIN, tenant.id),
                                   (PLATFORM_ADMIN, Role.PLATFORM_ADMIN, None),
                                   (SUPPORT, Role.SUPPORT, None)):
        if db.session.scalar(select(User).where(User.email == email)) is not None:
            continue
        password = secrets.token_urlsafe(12)
        user = tenancy.create_user(CLI_ACTOR, email, password, role, tenant_id)
        secret = None
        if two_factor.required_for(user):
            secret = two_factor.new_secret()
            two_factor.enable(CLI_ACTOR, user, secret)
        created.append(DemoAccount(role.label, email, password, secret))
    db.session.commit()
    return created


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Create the demo tenant and users (once) and print their passwords and two-factor secrets."""
    created = seed_demo()
    if not created:
        click.echo("The demo accounts exist already; their passwords were printed when they were made.")
    for account in created:
        for line in account.lines():
            click.echo(line)


@keys_cli.command("generate")
def generate_key() -> None:
    """Print a new encryption key: put it first in PORTAL_ENCRYPTION_KEYS, then run `flask keys rotate`."""
    click.echo(Fernet.generate_key().decode())


@keys_cli.command("rotate")
def rotate_keys() -> None:
    """Re-encrypt every secret under the first key of PORTAL_ENCRYPTION_KEYS."""
    keyring = current_keyring()
    total = 0
    for table in db.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedText):
                total += _rotate_column(table, column, keyring)
    db.session.commit()
    click.echo(f"re-encrypted {total} secrets under the first key")


def _rotate_column(table, column, keyring) -> int:
    key = table.primary_key.columns.values()
    rows = db.session.execute(
        select(*key, type_coerce(column, Text)).where(column.is_not(None))
    ).all()
    for *ids, token in rows:
        condition = [pk == value for pk, value in zip(key, ids, strict=True)]
        db.session.execute(table.update().where(*condition).values({column.name: literal(keyring.rotate(token),
                                                                                         Text)}))
    return len(rows)


@audit_cli.command("verify")
def verify_audit() -> None:
    """Check the hash chain; exit 1 naming the first broken event."""
    result = verify_chain()
    if result.ok:
        click.echo(f"audit log intact: {result.checked} events verified")
        return
    where = f"event {result.broken_event_id}" if result.broken_event_id else "the end of the log"
    raise click.ClickException(f"audit log broken at {where}: {result.reason} "
                               f"({result.checked} events verified before it)")


def register(app: Flask) -> None:
    for command in (tenants_cli, users_cli, keys_cli, audit_cli, seed_demo_command, hub_cli, reconcile_command,
                    openvpn_cli, doctor_command):
        app.cli.add_command(command)
