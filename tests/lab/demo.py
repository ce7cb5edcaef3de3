"""`make demo` (root): the portal with a real WireGuard lab hub and routers that come online.

Builds the lab (tests/lab/__init__.py), adds its hub to a fresh demo database and bootstraps it over SSH, puts
the demo tenant on it, provisions a few routers through the worker, brings their downloaded `.conf` up
in their namespaces and keeps a ping running in each, so the portal shows live handshakes and traffic.
Where openvpn and easy-rsa are installed, it also adds an OpenVPN lab server (tests/lab/openvpn.py),
bootstrapped over SSH, with a client namespace in which a downloaded `.ovpn` can be tried.
Ctrl-C stops the web server, the worker, Redis, and tears the labs down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from portal.devserver import INSTANCE, prepare_database, start_embedded_redis, stop  # noqa: E402
from tests.lab import Lab, lab_missing  # noqa: E402

ROUTERS = 3


def explain_and_exit(reason: str) -> None:
    sys.exit(f"make demo cannot run here: {reason}.\n"
             "It builds network namespaces with a WireGuard hub and routers, so it needs root and\n"
             "  apt-get install wireguard-go wireguard-tools iproute2 iputils-ping nftables openssh-server\n"
             "`make run` needs none of that (the hub is then unmanaged).")


def add_lab_hub(app, lab: Lab) -> None:
    from portal.audit.service import Actor
    from portal.cli import DEMO_TENANT
    from portal.extensions import db
    from portal.tenancy.service import tenant_by_name
    from portal.wireguard import hubs

    actor = Actor.system("demo")
    with app.app_context():
        hub = hubs.save_hub(actor, lab.hub_settings("lab hub"))
        hubs.place_tenant(actor, tenant_by_name(DEMO_TENANT).id, hub)
        print("Bootstrapping the lab hub over SSH:", ", ".join(hubs.bootstrap(actor, hub)))
        db.session.commit()


def add_openvpn_lab(app, stack: ExitStack) -> None:
    """An OpenVPN server for the demo tenant's clients, if this machine has openvpn and easy-rsa."""
    from tests.lab import openvpn as openvpn_lab

    missing = openvpn_lab.lab_missing()
    if missing:
        print(f"No OpenVPN lab server ({missing}): OpenVPN clients need a server a platform admin adds.")
        return
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.openvpn import servers

    lab = stack.enter_context(openvpn_lab.OpenVpnLab(clients=1))
    with app.app_context():
        server = servers.save_server(Actor.system("demo"), lab.server_settings("lab-openvpn"))
        print("Bootstrapping the OpenVPN lab server over SSH:", ", ".join(servers.bootstrap_server(
            Actor.system("demo"), server)))
        db.session.commit()
    lab.start_openvpn(lab.base_dir())
    print(f"  OpenVPN clients connect to {lab.server_address}:1194 (udp). To try a downloaded profile:\n"
          f"  sudo ip netns exec {lab.clients[0].name} openvpn --config FILE.ovpn")


def provision_routers(app) -> list[int]:
    from portal.audit.service import Actor
    from portal.cli import DEMO_TENANT
    from portal.extensions import db
    from portal.tenancy.service import tenant_by_name
    from portal.wireguard import jobs, service

    with app.app_context():
        tenant_id = tenant_by_name(DEMO_TENANT).id
        routers = [service.add_router(Actor.system("demo"), tenant_id, f"lab-router-{index + 1}",
                                      "a namespace of `make demo`") for index in range(ROUTERS)]
        ids = [router.current_configuration.id for router in routers]
        hub_id = routers[0].current_configuration.hub_id
        db.session.commit()
        jobs.sync_hub.wake(hub_id)
    return ids


def bring_up_when_active(app, lab: Lab, configuration_ids: list[int], timeout: float = 60) -> list[subprocess.Popen]:
    from portal.extensions import db
    from portal.ipam.pool import hub_address
    from portal.wireguard import service
    from portal.wireguard.models import Status, VpnConfiguration
    from portal.wireguard.render import render_conf

    pingers = []
    for configuration_id, router in zip(configuration_ids, lab.routers, strict=True):
        deadline = time.monotonic() + timeout
        with app.app_context():
            while (configuration := db.session.get(VpnConfiguration, configuration_id)).status != Status.ACTIVE:
                if time.monotonic() > deadline:
                    raise SystemExit(f"configuration {configuration_id} is {configuration.status}: see the worker")
                db.session.rollback()  # end the transaction: on SQLite it would hold the write lock
                time.sleep(0.2)
            router.wg_quick_up(render_conf(service.peer_config(configuration)))
            target = str(hub_address(configuration.subnet.ip_network))
        pingers.append(router.popen(["ping", "-q", "-i", "1", target], stdout=subprocess.DEVNULL))
        print(f"  {router.name}: {configuration.address} is up, pinging the hub at {target}")
    return pingers


def main() -> None:
    missing = lab_missing()
    if missing:
        explain_and_exit(missing)
    port = int(os.environ.get("PORTAL_PORT", "8000"))
    database = INSTANCE / "demo.db"
    for stale in (database, *database.parent.glob("demo.db-*")):  # the database and its WAL files
        stale.unlink(missing_ok=True)
    os.environ.setdefault("PORTAL_DATABASE_URL", f"sqlite:///{database}")
    os.environ.setdefault("PORTAL_MONITOR_INTERVAL", "5")
    with ExitStack() as stack:
        if not os.environ.get("PORTAL_REDIS_URL"):
            os.environ["PORTAL_REDIS_URL"] = start_embedded_redis(stack)
        from portal import create_app

        app = create_app()
        prepare_database(app)
        lab = stack.enter_context(Lab(routers=ROUTERS))
        add_lab_hub(app, lab)
        add_openvpn_lab(app, stack)
        worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], start_new_session=True)
        stack.callback(stop, worker)
        pingers = bring_up_when_active(app, lab, provision_routers(app))
        stack.callback(lambda: [stop(pinger) for pinger in pingers])
        print(f"\nThe portal is at http://127.0.0.1:{port}/ : log in as the demo tenant admin and open Routers "
              "(or OpenVPN clients).")
        print("Ctrl-C stops everything and removes the lab.\n")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with suppress(KeyboardInterrupt):
            app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
