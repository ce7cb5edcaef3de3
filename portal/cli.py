"""`flask` commands: tenants, users, demo seed, keys, audit, reconcile."""

from __future__ import annotations

import secrets

import click
from cryptography.fernet import Fernet
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import Text, literal, select, type_coerce

from portal.audit.service import Actor, verify_chain
from portal.crypto import EncryptedText, current_keyring
from portal.errors import DomainError
from portal.extensions import db
from portal.tenancy import service as tenancy
from portal.tenancy.models import Role

CLI_ACTOR = Actor.system("cli")
DEMO_TENANT = "Demo ISP"
DEMO_ADMIN = "admin@demo.example"
PLATFORM_ADMIN = "platform@demo.example"

tenants_cli = AppGroup("tenants", help="Create and list tenants.")
users_cli = AppGroup("users", help="Create and list users.")
keys_cli = AppGroup("keys", help="Encryption keys for secrets at rest.")
audit_cli = AppGroup("audit", help="The tamper-evident audit log.")
hub_cli = AppGroup("hub", help="WireGuard hubs: add, bootstrap, place tenants.")


def _commit_or_fail(action):
    try:
        result = action()
        db.session.commit()
        return result
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error


@tenants_cli.command("create")
@click.argument("name")
def create_tenant(name: str) -> None:
    tenant = _commit_or_fail(lambda: tenancy.create_tenant(CLI_ACTOR, name))
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

    user = _commit_or_fail(create)
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


def _hub_named(name: str):
    from portal.wireguard.models import Hub

    hub = db.session.scalar(select(Hub).where(Hub.name == name))
    if hub is None:
        raise click.ClickException(f"No hub named {name!r}.")
    return hub


@hub_cli.command("add")
@click.argument("name")
@click.option("--endpoint", required=True, help="Public host name or address routers connect to.")
@click.option("--port", default=51820, show_default=True)
@click.option("--interface", default="wg0", show_default=True)
@click.option("--driver", type=click.Choice(["ssh", "local", "none"]), default="ssh", show_default=True)
@click.option("--public-key", default="", help="Unmanaged hubs (driver none) only.")
@click.option("--ssh-host", default="")
@click.option("--ssh-port", default=22, show_default=True)
@click.option("--ssh-user", default="root", show_default=True)
@click.option("--host-key", default="", help='The hub\'s SSH host key to pin: "ssh-ed25519 AAAA...".')
@click.option("--ssh-key-file", type=click.File(), help="Private key the portal logs in with (stored encrypted).")
def add_hub(name, endpoint, port, interface, driver, public_key, ssh_host, ssh_port, ssh_user, host_key,
            ssh_key_file) -> None:
    """Add a hub; managed hubs get a generated WireGuard key pair."""
    from portal.wireguard.hubs import HubSettings, save_hub

    settings = HubSettings(name=name, endpoint_host=endpoint, endpoint_port=port, interface=interface, driver=driver,
                           public_key=public_key, ssh_host=ssh_host, ssh_port=ssh_port, ssh_user=ssh_user,
                           ssh_host_key=host_key, ssh_private_key=ssh_key_file.read() if ssh_key_file else "")
    hub = _commit_or_fail(lambda: save_hub(CLI_ACTOR, settings))
    click.echo(f"hub {hub.id}: {hub.name} ({hub.driver}), public key {hub.public_key}")


@hub_cli.command("list")
def list_hubs() -> None:
    from portal.wireguard.service import hubs_with_tenant_counts

    for hub, tenants in hubs_with_tenant_counts():
        click.echo(f"{hub.id}\t{hub.name}\t{hub.driver}\t{hub.endpoint_host}:{hub.endpoint_port}\t{tenants} tenants")


@hub_cli.command("bootstrap")
@click.argument("name")
@click.option("--private-key-file", type=click.File(), help="Take this WireGuard private key instead of ours.")
def bootstrap_hub(name: str, private_key_file) -> None:
    """Prepare the hub over SSH: interface, addresses, peers, forwarding, tenant isolation. Safe to re-run."""
    from portal.wireguard import hubs

    hub = _hub_named(name)
    private_key = private_key_file.read().strip() if private_key_file else None
    try:
        changes = _commit_or_fail(lambda: hubs.bootstrap(CLI_ACTOR, hub, private_key))
    except Exception as error:
        raise click.ClickException(f"bootstrap of {name} failed: {error}") from error
    for line in changes:
        click.echo(line)


@hub_cli.command("place")
@click.argument("tenant_name")
@click.argument("hub_name")
def place_tenant(tenant_name: str, hub_name: str) -> None:
    """Put a tenant on a hub before its first router (otherwise it goes to the least-loaded hub)."""
    from portal.wireguard import hubs

    tenant = tenancy.tenant_by_name(tenant_name)
    if tenant is None:
        raise click.ClickException(f"No tenant named {tenant_name!r}.")
    subnet = _commit_or_fail(lambda: hubs.place_tenant(CLI_ACTOR, tenant.id, _hub_named(hub_name)))
    click.echo(f"{tenant.name}: {subnet.network} on {hub_name}")


@click.command("reconcile")
@with_appcontext
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
def reconcile_command(dry_run: bool) -> None:
    """Wake the batch of every hub whose configurations wait for work, and compare managed hubs with the database."""
    from portal.wireguard.jobs import reconcile

    lines = reconcile(dry_run=dry_run)
    for line in lines:
        click.echo(("would " if dry_run else "") + line)
    click.echo(f"{len(lines)} action(s) {'to take' if dry_run else 'taken'}")


def register(app: Flask) -> None:
    for command in (tenants_cli, users_cli, keys_cli, audit_cli, hub_cli, seed_demo_command, reconcile_command):
        app.cli.add_command(command)
    from portal.openvpn.cli import openvpn_cli

    app.cli.add_command(openvpn_cli)
