"""`flask` commands: tenants, users, demo seed, keys, audit; and each area's own (`hub`, `reconcile`, `openvpn`)."""

from __future__ import annotations

import secrets

import click
from cryptography.fernet import Fernet
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import Text, literal, select, type_coerce

from portal.actions import commit_or_exit
from portal.audit.service import Actor, verify_chain
from portal.crypto import EncryptedText, current_keyring
from portal.errors import DomainError
from portal.extensions import db
from portal.openvpn.cli import openvpn_cli
from portal.tenancy import service as tenancy
from portal.tenancy.models import Role
from portal.wireguard.cli import hub_cli, reconcile_command

CLI_ACTOR = Actor.system("cli")
DEMO_TENANT = "Demo ISP"
DEMO_ADMIN = "admin@demo.example"
PLATFORM_ADMIN = "platform@demo.example"

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
@click.password_option(help="At least 10 characters; asked for when not given.")
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


def seed_demo() -> list[tuple[str, str, str]]:
    """A demo tenant, its admin and a platform admin, once. Returns the (role, email, password) it created."""
    if tenancy.tenant_by_name(DEMO_TENANT) is not None:
        return []
    tenant = tenancy.create_tenant(CLI_ACTOR, DEMO_TENANT)
    created = []
    for email, role, tenant_id in ((DEMO_ADMIN, Role.TENANT_ADMIN, tenant.id),
                                   (PLATFORM_ADMIN, Role.PLATFORM_ADMIN, None)):
        password = secrets.token_urlsafe(12)
        tenancy.create_user(CLI_ACTOR, email, password, role, tenant_id)
        created.append((role.label, email, password))
    db.session.commit()
    return created


@click.command("seed-demo")
@with_appcontext
def seed_demo_command() -> None:
    """Create the demo tenant and users (once) and print their passwords."""
    created = seed_demo()
    if not created:
        click.echo(f"The demo tenant {DEMO_TENANT!r} exists already; its passwords were printed when it was made.")
    for role, email, password in created:
        click.echo(f"{role}: {email} / {password}")


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
                    openvpn_cli):
        app.cli.add_command(command)
