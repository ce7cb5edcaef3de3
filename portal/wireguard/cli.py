"""`flask hub ...`: add, list and bootstrap WireGuard hubs, place tenants; `flask reconcile`."""

from __future__ import annotations

import click
from flask.cli import AppGroup, with_appcontext

from portal.actions import commit_or_exit, named_or_exit
from portal.audit.service import Actor
from portal.tenancy import service as tenancy
from portal.wireguard import hubs, jobs, service
from portal.wireguard.models import Hub

CLI_ACTOR = Actor.system("cli")

hub_cli = AppGroup("hub", help="WireGuard hubs: add, bootstrap, place tenants.")


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
    settings = hubs.HubSettings(
        name=name, endpoint_host=endpoint, endpoint_port=port, interface=interface, driver=driver,
        public_key=public_key, ssh_host=ssh_host, ssh_port=ssh_port, ssh_user=ssh_user, ssh_host_key=host_key,
        ssh_private_key=ssh_key_file.read() if ssh_key_file else "")
    hub = commit_or_exit(lambda: hubs.save_hub(CLI_ACTOR, settings))
    click.echo(f"hub {hub.id}: {hub.name} ({hub.driver}), public key {hub.public_key}")


@hub_cli.command("list")
def list_hubs() -> None:
    for hub, tenants in service.hubs_with_tenant_counts():
        click.echo(f"{hub.id}\t{hub.name}\t{hub.driver}\t{hub.endpoint_host}:{hub.endpoint_port}\t{tenants} tenants")


@hub_cli.command("bootstrap")
@click.argument("name")
@click.option("--private-key-file", type=click.File(), help="Take this WireGuard private key instead of ours.")
def bootstrap_hub(name: str, private_key_file) -> None:
    """Prepare the hub over SSH: interface, addresses, peers, forwarding, tenant isolation. Safe to re-run."""
    hub = named_or_exit(Hub, name, "hub")
    private_key = private_key_file.read().strip() if private_key_file else None
    try:
        changes = commit_or_exit(lambda: hubs.bootstrap(CLI_ACTOR, hub, private_key))
    except Exception as error:
        raise click.ClickException(f"bootstrap of {name} failed: {error}") from error
    for line in changes:
        click.echo(line)


@hub_cli.command("place")
@click.argument("tenant_name")
@click.argument("hub_name")
def place_tenant(tenant_name: str, hub_name: str) -> None:
    """Put a tenant on a hub before its first router (otherwise it goes to the least-loaded hub)."""
    tenant = tenancy.tenant_by_name(tenant_name)
    if tenant is None:
        raise click.ClickException(f"No tenant named {tenant_name!r}.")
    subnet = commit_or_exit(lambda: hubs.place_tenant(CLI_ACTOR, tenant.id, named_or_exit(Hub, hub_name, "hub")))
    click.echo(f"{tenant.name}: {subnet.network} on {hub_name}")


@click.command("reconcile")
@with_appcontext
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
def reconcile_command(dry_run: bool) -> None:
    """Wake the batch of every hub whose configurations wait for work, and compare managed hubs with the database."""
    lines = jobs.reconcile(dry_run=dry_run)
    for line in lines:
        click.echo(("would " if dry_run else "") + line)
    click.echo(f"{len(lines)} action(s) {'to take' if dry_run else 'taken'}")
