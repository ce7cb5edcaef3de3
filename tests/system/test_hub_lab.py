"""System tests: real WireGuard (wireguard-go) hub and routers in network namespaces, a real sshd on the hub,
the portal driving it through HTTP and a real RQ worker. They need root; `PORTAL_E2E=required` makes a
missing prerequisite a failure instead of a skip.
"""

from __future__ import annotations

import re
import time
from ipaddress import IPv4Network

import pytest
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.audit.service import Actor, verify_chain
from portal.extensions import db
from portal.ipam.pool import hub_address
from portal.jobs import queue
from portal.remote import SshRunner
from portal.tenancy.models import Tenant
from portal.wireguard import hubs
from portal.wireguard import jobs as wireguard_jobs
from portal.wireguard.models import Hub, Status, VpnConfiguration
from portal.wireguard.wgtext import parse_dump
from tests.conftest import (
    add_router,
    configuration_of,
    login,
    post,
    require,
    retire_hub,
    router_id_from,
    run_worker,
    unique,
)
from tests.lab import Lab, lab_missing

ACTOR = Actor.system("test")


@pytest.fixture
def lab():
    missing = lab_missing()
    require(missing is None, missing or "")
    with Lab(routers=3) as built:
        yield built
    SshRunner.close_all()


@pytest.fixture
def hub(app, lab):
    """The lab's hub, added to the portal and bootstrapped with `flask hub bootstrap`; retired afterwards."""
    with app.app_context():
        saved = hubs.save_hub(ACTOR, lab.hub_settings(unique("lab hub")))
        db.session.commit()
        hub_id, name = saved.id, saved.name
    result = app.test_cli_runner().invoke(args=["hub", "bootstrap", name])
    assert result.exit_code == 0, result.output
    assert "created interface wg0" in result.output
    yield hub_id
    retire_hub(app, hub_id)


def place(app, tenant_id: int, hub_id: int, router_to_router: bool = False) -> IPv4Network:
    with app.app_context():
        db.session.get(Tenant, tenant_id).router_to_router = router_to_router
        subnet = hubs.place_tenant(ACTOR, tenant_id, db.session.get(Hub, hub_id))
        db.session.commit()
        return subnet.ip_network


def hub_peers(lab) -> dict:
    return parse_dump(lab.hub.run(["wg", "show", "wg0", "dump"]).stdout).peers


def add_and_provision(app, client, name: str) -> VpnConfiguration:
    response = add_router(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    router_id = router_id_from(response)
    run_worker(app)
    return configuration_of(app, router_id)


def download_conf(client, configuration_id: int) -> str:
    response = client.get(f"/configurations/{configuration_id}/download.conf")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def connect(client, router_ns, configuration: VpnConfiguration) -> None:
    router_ns.wg_quick_up(download_conf(client, configuration.id))


def ping_eventually(namespace, address: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if namespace.ping(address):
            return True
    return False


def poll_hubs(app) -> None:
    with app.app_context():
        wireguard_jobs.poll_hubs.enqueue()
    run_worker(app)


def audit_actions(app, prefix: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.action.startswith(prefix))
                                       .order_by(AuditEvent.id)))


def test_a_downloaded_config_connects_and_the_router_page_shows_it_online(app, admin_client, lab, hub):
    network = place(app, admin_client.tenant_id, hub)
    configuration = add_and_provision(app, admin_client, "lab-one")
    assert configuration.status == Status.ACTIVE
    assert hub_peers(lab)[configuration.public_key].allowed_ips == (f"{configuration.address}/32",)

    connect(admin_client, lab.routers[0], configuration)
    assert ping_eventually(lab.routers[0], str(hub_address(network)))

    poll_hubs(app)
    page = admin_client.get(f"/routers/{configuration.router_id}").get_data(as_text=True)
    assert "status-online" in page
    assert re.search(r"\((\d+) s ago\)", page) and int(re.search(r"\((\d+) s ago\)", page).group(1)) < 30
    assert re.search(r"received (?!0 Bytes)[\d.]+ \w+, sent (?!0 Bytes)[\d.]+ \w+", page), page
    assert "192.0.2.10:" in page  # the endpoint the hub saw


def test_provisioning_twice_and_bootstrapping_twice_change_nothing(app, admin_client, lab, hub):
    place(app, admin_client.tenant_id, hub)
    configuration = add_and_provision(app, admin_client, "lab-twice")
    before = lab.hub.run(["wg", "showconf", "wg0"]).stdout, lab.hub.run(["nft", "list", "ruleset"]).stdout
    with app.app_context():
        queue().enqueue(wireguard_jobs.sync_hub.path, configuration.hub_id)  # a batch that finds nothing to do
    run_worker(app)
    with app.app_context():
        name = db.session.get(Hub, hub).name
    result = app.test_cli_runner().invoke(args=["hub", "bootstrap", name])
    assert result.exit_code == 0 and result.output.strip() == "unchanged", result.output
    assert (lab.hub.run(["wg", "showconf", "wg0"]).stdout, lab.hub.run(["nft", "list", "ruleset"]).stdout) == before


def test_revoking_cuts_the_router_off_and_frees_its_address(app, admin_client, lab, hub):
    network = place(app, admin_client.tenant_id, hub)
    configuration = add_and_provision(app, admin_client, "lab-revoke")
    connect(admin_client, lab.routers[0], configuration)
    assert ping_eventually(lab.routers[0], str(hub_address(network)))

    post(admin_client, f"/routers/{configuration.router_id}/revoke")
    run_worker(app)
    assert configuration.public_key not in hub_peers(lab)
    assert not lab.routers[0].ping(str(hub_address(network)), count=3, timeout=1)
    page = admin_client.get(f"/routers/{configuration.router_id}").get_data(as_text=True)
    assert "status-revoked" in page
    again = add_and_provision(app, admin_client, "lab-after-revoke")
    assert again.address == configuration.address  # the lowest free address is the one just released


def test_tenants_on_one_hub_cannot_reach_each_other(app, admin_client, other_tenant_admin, lab, hub):
    network_a = place(app, admin_client.tenant_id, hub, router_to_router=True)
    network_b = place(app, other_tenant_admin[0], hub)
    other_client = app.test_client()
    login(other_client, other_tenant_admin[1])
    a1 = add_and_provision(app, admin_client, "tenant-a-1")
    a2 = add_and_provision(app, admin_client, "tenant-a-2")
    b1 = add_and_provision(app, other_client, "tenant-b-1")
    router_a1, router_a2, router_b1 = lab.routers
    connect(admin_client, router_a1, a1)
    connect(admin_client, router_a2, a2)
    connect(other_client, router_b1, b1)
    assert ping_eventually(router_a1, str(hub_address(network_a)))
    assert ping_eventually(router_a2, str(hub_address(network_a)))
    assert ping_eventually(router_b1, str(hub_address(network_b)))
    assert ping_eventually(router_a1, a2.address)  # within tenant A, allowed by its setting

    # Routes into the other tenant's subnet, forced on the routers: only the hub's firewall stops them.
    for router, configuration, other in ((router_a1, a1, network_b), (router_b1, b1, network_a)):
        own = IPv4Network(f"{configuration.address}/{network_a.prefixlen}", strict=False)
        hub_key = router.run(["wg", "show", "wg0", "peers"]).stdout.strip()
        router.run(["wg", "set", "wg0", "peer", hub_key, "allowed-ips", f"{own},{other}"])
        router.run(["ip", "route", "add", str(other), "dev", "wg0"])
    assert not router_a1.ping(b1.address, count=3, timeout=1)
    assert not router_b1.ping(a1.address, count=3, timeout=1)
    assert not router_b1.ping(str(hub_address(network_a)), count=2, timeout=1)


def test_the_router_to_router_setting_opens_and_closes_traffic_between_a_tenants_routers(
        app, admin_client, platform_admin, lab, hub):
    place(app, admin_client.tenant_id, hub)
    first, second = (add_and_provision(app, admin_client, name) for name in ("lab-r2r-1", "lab-r2r-2"))
    connect(admin_client, lab.routers[0], first)
    connect(admin_client, lab.routers[1], second)
    assert ping_eventually(lab.routers[1], str(hub_address(IPv4Network(f"{second.address}/24", strict=False))))
    assert not lab.routers[0].ping(second.address, count=2, timeout=1)

    staff = app.test_client()
    login(staff, platform_admin)
    toggle = f"/admin/tenants/{admin_client.tenant_id}/router-to-router"
    response = post(staff, toggle, {"allowed": "yes"}, token_page="/tenants", follow_redirects=True)
    assert "may now reach each other once the hub firewall is updated" in response.get_data(as_text=True)
    run_worker(app)
    assert ping_eventually(lab.routers[0], second.address)

    post(staff, toggle, {"allowed": "no"}, token_page="/tenants")
    run_worker(app)
    assert not lab.routers[0].ping(second.address, count=2, timeout=1)
    assert audit_actions(app, "tenant.router_to_router.") == ["tenant.router_to_router.changed"] * 2


def test_bootstrap_now_on_the_hub_page_runs_in_a_worker_and_shows_its_outcome(app, platform_admin, lab, hub):
    staff = app.test_client()
    login(staff, platform_admin)
    response = post(staff, f"/admin/hubs/{hub}/bootstrap", token_page="/admin/hubs", follow_redirects=True)
    assert "Bootstrap of" in response.get_data(as_text=True)
    run_worker(app)
    card = staff.get("/admin/hubs").get_data(as_text=True)
    assert re.search(r"Last bootstrap</dt><dd>[^<]*<time[^>]*>[^<]*</time>:\s*unchanged", card), card

    lab.hub.sshd.stop()
    post(staff, f"/admin/hubs/{hub}/bootstrap", token_page="/admin/hubs")
    run_worker(app)
    assert "failed: " in staff.get("/admin/hubs").get_data(as_text=True)
    lab.hub.sshd.start()


def test_one_reconcile_repairs_drift_and_audits_both_repairs(app, admin_client, lab, hub):
    place(app, admin_client.tenant_id, hub)
    kept = add_and_provision(app, admin_client, "lab-kept")
    deleted = add_and_provision(app, admin_client, "lab-deleted-by-hand")
    stray_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
    lab.hub.run(["wg", "set", "wg0", "peer", stray_key, "allowed-ips", "10.99.0.9/32"])
    lab.hub.run(["wg", "set", "wg0", "peer", deleted.public_key, "remove"])

    dry_run = app.test_cli_runner().invoke(args=["reconcile", "--dry-run"]).output
    assert f"remove unknown peer {stray_key}" in dry_run and f"configuration {deleted.id}" in dry_run
    assert stray_key in hub_peers(lab)  # a dry run changes nothing

    assert app.test_cli_runner().invoke(args=["reconcile"]).exit_code == 0
    run_worker(app)
    peers = hub_peers(lab)
    assert set(peers) == {kept.public_key, deleted.public_key}
    assert peers[deleted.public_key].allowed_ips == (f"{deleted.address}/32",)
    assert audit_actions(app, "hub.drift.")[-2:] == ["hub.drift.peer_missing", "hub.drift.unknown_peer"]
    with app.app_context():
        assert "remove unknown peer" in db.session.get(Hub, hub).last_reconcile_result
        assert verify_chain().ok  # several repairs in one transaction keep the audit chain linked


def test_rotated_keys_work_and_the_old_ones_do_not(app, admin_client, lab, hub):
    network = place(app, admin_client.tenant_id, hub)
    old = add_and_provision(app, admin_client, "lab-rotate")
    router = lab.routers[0]
    connect(admin_client, router, old)
    assert ping_eventually(router, str(hub_address(network)))

    post(admin_client, f"/configurations/{old.id}/rotate")
    run_worker(app)
    new = configuration_of(app, old.router_id)
    assert new.status == Status.ACTIVE and new.public_key != old.public_key and new.address == old.address
    assert set(hub_peers(lab)) == {new.public_key}
    assert not router.ping(str(hub_address(network)), count=3, timeout=1)  # the old keys stopped working

    router.wg_quick_down()
    connect(admin_client, router, new)
    assert ping_eventually(router, str(hub_address(network)))
    assert "configuration.rotate.succeeded" in audit_actions(app, "configuration.rotate")


def test_provisioning_waits_while_the_hub_is_down_and_finishes_once_it_is_back(app, admin_client, lab, hub):
    place(app, admin_client.tenant_id, hub)
    lab.hub.sshd.stop()
    response = add_router(admin_client, "lab-hub-down")
    router_id = router_id_from(response)
    run_worker(app)  # the first try and its retries find sshd gone
    waiting = configuration_of(app, router_id)
    assert waiting.status == Status.PENDING
    assert "waiting for hub: cannot reach" in admin_client.get(f"/routers/{router_id}").get_data(as_text=True)

    lab.hub.sshd.start()
    app.test_cli_runner().invoke(args=["reconcile"])
    run_worker(app)
    done = configuration_of(app, router_id)
    assert done.status == Status.ACTIVE and done.last_error is None
    assert list(hub_peers(lab)) == [done.public_key]
    with app.app_context():
        succeeded = db.session.scalar(select(func.count()).where(
            AuditEvent.target_id == done.id, AuditEvent.action == "configuration.provision.succeeded"))
    assert succeeded == 1


def test_a_changed_host_key_fails_the_job_before_any_command_runs(app, admin_client, lab, hub):
    place(app, admin_client.tenant_id, hub)
    lab.hub.sshd.replace_host_key()
    response = add_router(admin_client, "lab-host-key")
    router_id = router_id_from(response)
    run_worker(app)
    configuration = configuration_of(app, router_id)
    assert configuration.status == Status.FAILED and configuration.attempt == 1  # not retried
    assert "does not match the pinned key" in configuration.last_error
    assert hub_peers(lab) == {}
    assert lab.hub.sshd.log.count("Accepted publickey") == 1  # the bootstrap's login; none since
