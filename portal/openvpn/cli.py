"""`flask openvpn ...`: add, list and bootstrap OpenVPN servers; reconcile stuck clients."""

from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import AppGroup

from portal.actions import commit_or_exit, named_or_exit
from portal.audit.service import Actor
from portal.extensions import db
from portal.jobs import work_lock
from portal.openvpn import jobs, servers
from portal.openvpn.models import OpenVpnServer

CLI_ACTOR = Actor.system("cli")

openvpn_cli = AppGroup("openvpn", help="OpenVPN servers: add, list, bootstrap; reconcile clients.")


@openvpn_cli.command("add-server")
@click.argument("name")
@click.option("--remote-host", required=True, help="Public host name or address clients connect to.")
@click.option("--port", "remote_port", default=1194, show_default=True)
@click.option("--proto", "protocol", type=click.Choice(["udp", "tcp"]), default="udp", show_default=True)
@click.option("--base-dir", default="/etc/openvpn/portal", show_default=True)
@click.option("--network", default="10.8.0.0", show_default=True)
@click.option("--netmask", default="255.255.255.0", show_default=True)
@click.option("--management-port", default=7505, show_default=True)
@click.option("--driver", type=click.Choice(["ssh", "local"]), default="ssh", show_default=True)
@click.option("--ssh-host", default="")
@click.option("--ssh-port", default=22, show_default=True)
@click.option("--ssh-user", default="root", show_default=True)
@click.option("--host-key", "ssh_host_key", default="", help='SSH host key to pin: "ssh-ed25519 AAAA...".')
@click.option("--ssh-key-file", type=click.File(), help="Private key the portal logs in with (stored encrypted).")
def add_server(ssh_key_file, **options) -> None:
    """Add an OpenVPN server; then run `flask openvpn bootstrap NAME`."""
    settings = servers.ServerSettings(**options, ssh_private_key=ssh_key_file.read() if ssh_key_file else "")
    server = commit_or_exit(lambda: servers.save_server(CLI_ACTOR, settings))
    click.echo(f"OpenVPN server {server.id}: {server.name} ({server.driver}), "
               f"{server.protocol} {server.remote_host}:{server.remote_port}")


@openvpn_cli.command("list")
def list_servers() -> None:
    for server, clients in servers.servers_with_client_counts():
        click.echo(f"{server.id}\t{server.name}\t{server.driver}\t{server.protocol} "
                   f"{server.remote_host}:{server.remote_port}\t{server.base_dir}\t{clients} live clients")


@openvpn_cli.command("bootstrap")
@click.argument("name")
def bootstrap(name: str) -> None:
    """Prepare the server: PKI, server configuration, client script. Safe to re-run."""
    server = named_or_exit(OpenVpnServer, name, "OpenVPN server")
    with work_lock(jobs.server_lock_name(server.id)):
        try:
            changes = servers.bootstrap_server(CLI_ACTOR, server)
        except Exception as error:
            db.session.commit()  # the failure, on the server row and in the audit log
            raise click.ClickException(f"bootstrap of {name} failed: {error}") from error
        db.session.commit()
    for line in changes:
        click.echo(line)


@openvpn_cli.command("reconcile")
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
def reconcile(dry_run: bool) -> None:
    """Wake a job for OpenVPN clients whose work waits and that no job is doing (workers do this every
    PORTAL_SWEEP_INTERVAL seconds)."""
    lines = jobs.sweep(dry_run=dry_run, idle=timedelta(0))
    for line in lines:
        click.echo(("would " if dry_run else "") + line)
    click.echo(f"{len(lines)} action(s) {'to take' if dry_run else 'taken'}")
