"""System test: a push and a key rotation over the RouterOS API against a real hub (wireguard-go in a namespace,
managed by the portal over SSH), and a router whose API is the in-test server (`tests.routeros.fake_routeros`)
and whose WireGuard is real: every change the portal makes to the fake router's configuration is mirrored onto
a wireguard-go interface in a router namespace, so the handshakes the portal waits for are real ones.

Needs root and the lab's software (see tests/lab); skipped elsewhere unless PORTAL_E2E=required.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from ipaddress import IPv4Network

import pytest
from sqlalchemy import select

from portal.audit.service import Actor
from portal.extensions import db
from portal.ipam.pool import hub_address
from portal.remote import SshRunner
from portal.routeros import jobs as routeros_jobs
from portal.routeros.models import PushStatus, RouterPush
from portal.tenancy.models import Tenant
from portal.wireguard import hubs
from portal.wireguard.models import Hub, Status
from portal.wireguard.wgtext import parse_dump
from tests.conftest import add_router, configuration_of, post, require, retire_hub, router_id_from, run_worker, unique
from tests.lab import Lab, Namespace, lab_missing, start_wireguard_go
from tests.routeros.fake_routeros import FakeRouterOS, RouterState

pytestmark = pytest.mark.system
ACTOR = Actor.system("test")
PASSWORD = "router-api-password"


@dataclass(frozen=True)
class Tunnel:
    private_key: str
    hub_key: str
    preshared_key: str
    endpoint: str
    allowed: str
    address: str


class WireGuardMirror:
    """The fake router's portal interface, peer and address, held by a real wireguard-go in `namespace`."""

    def __init__(self, namespace: Namespace):
        self.namespace, self.applied, self.started = namespace, None, False

    def __call__(self, state: RouterState) -> None:
        tunnel = self._tunnel(state)
        if tunnel is None or tunnel == self.applied:
            return
        if not self.started:
            start_wireguard_go(self.namespace, "wg0")
            self.started = True
        key_file, psk_file = self.namespace.conf_dir / "private.key", self.namespace.conf_dir / "psk.key"
        for path, value in ((key_file, tunnel.private_key), (psk_file, tunnel.preshared_key)):
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(value + "\n")
        if self.applied is not None and self.applied.hub_key != tunnel.hub_key:
            self.namespace.run(["wg", "set", "wg0", "peer", self.applied.hub_key, "remove"])
        self.namespace.run(["wg", "set", "wg0", "listen-port", "13231", "private-key", key_file,
                            "peer", tunnel.hub_key, "preshared-key", psk_file, "endpoint", tunnel.endpoint,
                            "allowed-ips", tunnel.allowed, "persistent-keepalive", "25"])
        self.namespace.ip("addr", "replace", tunnel.address, "dev", "wg0")
        self.namespace.ip("link", "set", "wg0", "mtu", "1420", "up")
        self.applied = tunnel

    @staticmethod
    def _tunnel(state: RouterState) -> Tunnel | None:
        ours = {path: [item for item in items if (item.get("comment") or "").startswith("vpn-portal:")]
                for path, items in state.menus.items()}
        interfaces, peers, addresses = (ours["/interface/wireguard"], ours["/interface/wireguard/peers"],
                                        ours["/ip/address"])
        if not (interfaces and peers and addresses):
            return None
        peer = peers[0]
        return Tunnel(interfaces[0]["private-key"], peer["public-key"], peer["preshared-key"],
                      f"{peer['endpoint-address']}:{peer['endpoint-port']}", peer["allowed-address"],
                      addresses[0]["address"])


@pytest.fixture
def lab():
    missing = lab_missing()
    require(missing is None, missing or "")
    with Lab(routers=1) as built:
        yield built
    SshRunner.close_all()


@pytest.fixture
def hub(app, lab):
    with app.app_context():
        saved = hubs.save_hub(ACTOR, lab.hub_settings(unique("routeros lab hub")))
        db.session.commit()
        hub_id, name = saved.id, saved.name
    result = app.test_cli_runner().invoke(args=["hub", "bootstrap", name])
    assert result.exit_code == 0, result.output
    yield hub_id
    retire_hub(app, hub_id)


@pytest.fixture
def router(lab):
    with FakeRouterOS(identity="lab-router") as fake:
        mirror = WireGuardMirror(lab.routers[0])
        fake.state.listeners.append(mirror)
        yield fake


def hub_peers(lab) -> dict:
    return parse_dump(lab.hub.run(["wg", "show", "wg0", "dump"]).stdout).peers


def last_push(app, router_id: int) -> RouterPush:
    with app.app_context():
        push = db.session.scalar(select(RouterPush).where(RouterPush.router_id == router_id)
                                 .order_by(RouterPush.id.desc()))
        db.session.expunge(push)
        return push



def work_until(app, router_id: int, done, timeout: float = 40) -> RouterPush:
    """Run the sweep and a burst worker until `done(push)`, as a worker's periodic sweep would."""
    deadline = time.monotonic() + timeout
    while True:
        run_worker(app)
        push = last_push(app, router_id)
        if done(push) or time.monotonic() > deadline:
            return push
        time.sleep(0.5)
        with app.app_context():
            routeros_jobs.sweep()


def ping_eventually(namespace, address: str, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if namespace.ping(address):
            return True
    return False


def test_push_and_key_rotation_over_the_api_against_a_real_hub(app, admin_client, lab, hub, router, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_HANDSHAKE_WAIT", 30.0)
    with app.app_context():
        db.session.get(Tenant, admin_client.tenant_id).router_to_router = False
        subnet = hubs.place_tenant(ACTOR, admin_client.tenant_id, db.session.get(Hub, hub))
        db.session.commit()
        network = IPv4Network(subnet.network)
    router_id = router_id_from(add_router(admin_client, "lab-api"))
    run_worker(app)
    assert configuration_of(app, router_id).status == Status.ACTIVE
    post(admin_client, f"/routers/{router_id}/routeros",
         {"address": router.host, "port": str(router.port), "username": "portal", "password": PASSWORD})

    # Push: "active" only once the real hub has seen the router's handshake.
    post(admin_client, f"/routers/{router_id}/routeros/push")
    push = work_until(app, router_id, lambda push: push.status in (PushStatus.ACTIVE, PushStatus.FAILED))
    assert push.status == PushStatus.ACTIVE, push.last_error
    old = configuration_of(app, router_id)
    assert hub_peers(lab)[old.public_key].latest_handshake is not None
    assert ping_eventually(lab.routers[0], str(hub_address(network)))

    # Rotation: the new peer beside the old one, the router on the new keys, the new handshake, the old peer gone.
    post(admin_client, f"/configurations/{old.id}/rotate")
    push = work_until(app, router_id, lambda push: push.kind == "rotate" and push.status in (PushStatus.ACTIVE,
                                                                                               PushStatus.FAILED))
    assert push.status == PushStatus.ACTIVE, push.last_error
    new = configuration_of(app, router_id)
    assert new.public_key == push.new_public_key != old.public_key
    peers = hub_peers(lab)
    assert set(peers) == {new.public_key}
    assert peers[new.public_key].latest_handshake is not None
    assert peers[new.public_key].allowed_ips == (f"{new.address}/32",)
    assert ping_eventually(lab.routers[0], str(hub_address(network)))

    # Rollback: the router cannot reach the hub while it rotates; it ends on its old keys, and works again.
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_HANDSHAKE_WAIT", 4.0)
    lab.routers[0].ip("link", "set", "eth0", "down")
    post(admin_client, f"/configurations/{new.id}/rotate")
    push = work_until(app, router_id, lambda push: push.status in (PushStatus.ACTIVE, PushStatus.FAILED))
    assert push.status == PushStatus.FAILED and "back on its old keys" in push.last_error
    back = configuration_of(app, router_id)
    assert (back.status, back.public_key, back.next_public_key) == (Status.ACTIVE, new.public_key, None)
    peers = hub_peers(lab)
    assert set(peers) == {new.public_key} and peers[new.public_key].allowed_ips == (f"{new.address}/32",)
    lab.routers[0].ip("link", "set", "eth0", "up")
    assert ping_eventually(lab.routers[0], str(hub_address(network)), timeout=30)
