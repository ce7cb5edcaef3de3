"""System tests: a real OpenVPN server (easy-rsa, the project's scripts) in a network namespace with its own sshd,
driven by the portal through HTTP and a real RQ worker; real OpenVPN clients in client namespaces.

They need root; `PORTAL_E2E=required` makes a missing prerequisite a failure instead of a skip.
"""

from __future__ import annotations

import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import undefer

from portal.audit.models import AuditEvent
from portal.audit.service import Actor, verify_chain
from portal.extensions import db
from portal.jobs import queue
from portal.openvpn import servers, service
from portal.openvpn.jobs import poll_servers, provision_client, revoke_client, sweep
from portal.openvpn.models import OpenVpnServer, Status, VpnClient
from portal.remote import SshRunner
from tests.conftest import login, post, require, run_worker, served, unique
from tests.lab.openvpn import OpenVpnLab, easyrsa_path, lab_missing
from tests.system.test_browser_live import Person, not_reloaded, run_worker_process, screenshots_on_failure

ACTOR = Actor.system("test")
TUNNEL_SERVER = "10.8.0.1"


@pytest.fixture
def lab():
    missing = lab_missing()
    require(missing is None, missing or "")
    with OpenVpnLab(clients=1) as built:
        yield built
    SshRunner.close_all()


@pytest.fixture
def server(app, lab):
    """The lab's server, added to the portal (the only one open to new clients), bootstrapped with
    `flask openvpn bootstrap`, and running; retired afterwards."""
    base = lab.base_dir()
    with app.app_context():
        db.session.execute(update(OpenVpnServer).values(accepts_new_clients=False))
        saved = servers.save_server(ACTOR, lab.server_settings(unique("lab-ovpn").replace(" ", "-")))
        db.session.commit()
        server_id, name = saved.id, saved.name
    result = app.test_cli_runner().invoke(args=["openvpn", "bootstrap", name])
    assert result.exit_code == 0, result.output
    assert result.output.strip() and result.output.strip() != "unchanged"
    lab.start_openvpn(base)
    again = app.test_cli_runner().invoke(args=["openvpn", "bootstrap", name])
    assert again.exit_code == 0 and again.output == "unchanged\n", again.output
    yield server_id
    with app.app_context():  # later tests must neither reach for a lab that is gone nor land on it
        retired = db.session.get(OpenVpnServer, server_id)
        retired.accepts_new_clients, retired.driver, retired.base_dir = False, "local", "/nonexistent/retired"
        db.session.commit()


def add_and_provision(app, client, name: str) -> VpnClient:
    response = post(client, "/openvpn/clients/new", {"name": name}, token_page="/openvpn/clients/new")
    assert response.status_code == 303, response.get_data(as_text=True)
    client_id = int(response.headers["Location"].rsplit("/", 1)[1])
    run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.ACTIVE, row.last_error
    return row


def load(app, client_id: int) -> VpnClient:
    with app.app_context():
        row = db.session.get(VpnClient, client_id, options=[undefer(VpnClient.bundle)])  # the tests read it detached
        db.session.expunge(row)
        return row


def download(client, client_id: int) -> str:
    response = client.get(f"/openvpn/clients/{client_id}/download.ovpn")
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def poll(app) -> None:
    with app.app_context():
        poll_servers.enqueue()
    run_worker(app)


def crl_serials(base) -> list[str]:
    text = subprocess.run(["openssl", "crl", "-in", str(base / "crl.pem"), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    return re.findall(r"Serial Number: ([0-9A-F]+)", text)


def actions_for(app, client_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.target_type == "vpn_clients", AuditEvent.target_id == client_id).order_by(AuditEvent.id)))


def revoke_output(app, client_id: int) -> list[dict]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.target_type == "vpn_clients", AuditEvent.target_id == client_id,
            AuditEvent.action == "client.revoke.output").order_by(AuditEvent.id)))


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def listed_by_server(app, client_id: int) -> bool:
    """Whether the server's `status` (through the portal's monitoring job) lists the client as connected."""
    poll(app)
    return load(app, client_id).connected


def session_up(connection) -> bool:
    """The client's latest start reached "Initialization Sequence Completed" and was not restarted since."""
    text = connection.log()
    done = text.rfind("Initialization Sequence Completed")
    return done >= 0 and connection.alive() and "SIGUSR1" not in text[done:] and "Restart pause" not in text[done:]


def assert_refused(lab: OpenVpnLab, ovpn: str, name: str) -> None:
    """A new connection attempt is refused by the server: its log says the certificate (common name `name`) is
    revoked."""
    offset = len(lab.openvpn.log())
    attempt = lab.connect(ovpn, wait=False)
    try:
        lab.openvpn.wait_for(rf"VERIFY ERROR: depth=0, error=certificate revoked: CN={re.escape(name)},",
                             timeout=10, after=offset)
        assert "Initialization Sequence Completed" not in attempt.log()
    finally:
        attempt.stop()


def test_a_client_made_in_the_browser_connects_pings_and_shows_connected(app, admin_client, other_tenant_admin,
                                                                         lab, server):
    row = add_and_provision(app, admin_client, "lab-laptop")
    assert re.fullmatch(r"[0-9A-F]+", row.serial) and row.not_after
    ovpn = download(admin_client, row.id)
    assert ovpn.startswith(f"client\ndev tun\nproto udp\nremote {lab.server_address} 1194\n")

    connection = lab.connect(ovpn)
    assert "Initialization Sequence Completed" in connection.log()
    assert lab.ping(TUNNEL_SERVER)

    poll(app)
    connected = load(app, row.id)
    assert connected.connected and connected.real_address.startswith("192.0.2.10:")
    assert connected.virtual_address.startswith("10.8.0.") and connected.bytes_received > 0
    page = admin_client.get(f"/openvpn/clients/{row.id}").get_data(as_text=True)
    assert "status-online" in page and "192.0.2.10:" in page

    intruder = app.test_client()
    login(intruder, other_tenant_admin[1])
    assert intruder.get(f"/openvpn/clients/{row.id}/download.ovpn").status_code == 404
    assert "lab-laptop" not in intruder.get("/openvpn/clients").get_data(as_text=True)

    with app.app_context():  # provisioning again is a no-op: the same certificate
        queue().enqueue(provision_client.path, row.id)
    run_worker(app)
    assert load(app, row.id).serial == row.serial


def test_revoke_drops_the_session_refuses_new_ones_and_rerunning_is_a_no_op(app, admin_client, lab, server):
    row = add_and_provision(app, admin_client, "lab-doomed")
    ovpn = download(admin_client, row.id)
    connection = lab.connect(ovpn)
    assert lab.ping(TUNNEL_SERVER)

    confirm = admin_client.get(f"/openvpn/clients/{row.id}/revoke").get_data(as_text=True)
    assert "This cannot be undone" in confirm
    assert post(admin_client, f"/openvpn/clients/{row.id}/revoke", token_page="/openvpn/clients").status_code == 303
    started = time.monotonic()
    run_worker(app)
    assert wait_until(lambda: not listed_by_server(app, row.id), 5)
    assert time.monotonic() - started < 10
    assert not lab.ping(TUNNEL_SERVER, timeout=1)

    revoked = load(app, row.id)
    assert revoked.status == Status.REVOKED and revoked.bundle is None and revoked.revoked_at
    page = admin_client.get(f"/openvpn/clients/{row.id}").get_data(as_text=True)
    assert "status-revoked" in page and "download.ovpn" not in page
    assert admin_client.get(f"/openvpn/clients/{row.id}/download.ovpn").status_code == 303
    output = revoke_output(app, row.id)
    assert [event["outcome"] for event in output] == ["revoked"] and output[0]["exit_status"] == 0
    assert "kill 192.0.2.10:" in output[0]["stderr"]
    base = lab.base_dir()
    assert crl_serials(base).count(revoked.serial) == 1

    connection.stop()
    assert_refused(lab, ovpn, row.common_name)

    with app.app_context():
        job = queue().enqueue(revoke_client.path, row.id)
    run_worker(app)
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == "nothing to do"
    assert load(app, row.id).attempt == revoked.attempt
    assert actions_for(app, row.id).count("client.revoke.succeeded") == 1
    assert crl_serials(base).count(revoked.serial) == 1
    poll(app)
    assert not load(app, row.id).connected


def test_a_crash_between_easyrsa_revoke_and_gen_crl_ends_revoked_exactly_once(app, admin_client, lab, server):
    row = add_and_provision(app, admin_client, "lab-crashy")
    ovpn = download(admin_client, row.id)
    connection = lab.connect(ovpn)
    base = lab.base_dir()
    assert post(admin_client, f"/openvpn/clients/{row.id}/revoke", token_page="/openvpn/clients").status_code == 303

    # A worker claimed the revocation, ran `easyrsa revoke`, and died before `gen-crl`: its job is lost with it.
    with app.app_context():
        assert service.claim(row.id, (Status.REVOKING,), Status.REVOKING).attempt == row.attempt + 1
        db.session.commit()
    crashed = lab.server.run(["env", "EASYRSA_BATCH=1", "EASYRSA_NO_VARS=1", f"EASYRSA_PKI={base}/pki",
                              easyrsa_path(), "revoke", row.common_name], check=False)
    assert crashed.returncode == 0, crashed.stderr
    assert row.serial not in crl_serials(base)  # revoked in the index, not in the installed CRL
    with app.app_context():
        queue().empty()  # the dead worker's job is gone
    assert session_up(connection) and listed_by_server(app, row.id)  # nothing cut the session yet

    with app.app_context():
        assert sweep(idle=timedelta(0)) == [f"OpenVPN client {row.id} (revoking): enqueue revoke_client"]
    run_worker(app)

    revoked = load(app, row.id)
    assert revoked.status == Status.REVOKED and revoked.attempt == row.attempt + 2
    assert crl_serials(base).count(row.serial) == 1
    assert [event["outcome"] for event in revoke_output(app, row.id)] == ["already revoked"]
    actions = actions_for(app, row.id)
    assert actions.count("client.revoke.succeeded") == 1 and actions.count("client.revoke.requested") == 1
    assert wait_until(lambda: not listed_by_server(app, row.id), 5)
    assert not lab.ping(TUNNEL_SERVER, timeout=1)
    connection.stop()
    assert_refused(lab, ovpn, row.common_name)
    with app.app_context():
        assert verify_chain().ok


def test_provisioning_waits_while_the_server_is_unreachable_then_finishes(app, admin_client, lab, server):
    lab.server.sshd.stop()
    response = post(admin_client, "/openvpn/clients/new", {"name": "lab-later"}, token_page="/openvpn/clients/new")
    client_id = int(response.headers["Location"].rsplit("/", 1)[1])
    SshRunner.close_all()
    run_worker(app)
    waiting = load(app, client_id)
    assert waiting.status == Status.PENDING and waiting.last_error
    assert "waiting for server:" in admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)

    lab.server.sshd.start()
    assert app.test_cli_runner().invoke(args=["openvpn", "reconcile"]).exit_code == 0
    run_worker(app)
    done = load(app, client_id)
    assert done.status == Status.ACTIVE and done.last_error is None
    assert actions_for(app, client_id).count("client.provision.succeeded") == 1


def test_in_a_browser_a_client_is_created_goes_active_live_downloads_connects_and_is_revoked(
        app, chromium, tenant_admin, other_tenant_admin, lab, server):
    with served(app) as base_url:
        anna, bob = Person(chromium, base_url), Person(chromium, base_url)
        client_page = {}
        try:
            with screenshots_on_failure(anna, "openvpn-client", client_page):
                bob_list = bob.log_in(other_tenant_admin[1])
                bob.open(bob_list, "/openvpn/clients")

                page = anna.log_in(tenant_admin[1])
                anna.open(page, "/openvpn/clients/new")
                page.get_by_label("Name").fill("$(id)")
                page.get_by_role("button", name="Add client").click()
                assert "letters" in page.locator("#name-error").inner_text()
                page.get_by_label("Name").fill("anna-laptop")
                page.get_by_role("button", name="Add client").click()
                page.wait_for_url(re.compile(r".*/openvpn/clients/\d+$"))
                client_page["path"] = page.url.removeprefix(base_url)
                anna.open(page, client_page["path"])
                assert "pending" in page.locator("#client-panel").inner_text()

                run_worker_process()  # a real worker process, over SSH to the lab server
                page.locator("#client-panel .status-active").wait_for()
                assert not_reloaded(page)
                with page.expect_download() as download_info:
                    page.get_by_role("link", name="Download OpenVPN profile (.ovpn)").click()
                ovpn = Path(download_info.value.path()).read_text()
                assert f"remote {lab.server_address} 1194" in ovpn and "<key>" in ovpn
                lab.connect(ovpn)
                assert lab.ping(TUNNEL_SERVER)

                page.get_by_role("link", name="Revoke…").click()
                page.get_by_role("button", name="Revoke for good").click()
                page.wait_for_url(base_url + client_page["path"])
                anna.open(page, client_page["path"])
                run_worker_process()
                page.locator("#client-panel .status-revoked").wait_for()
                assert not_reloaded(page)
                assert page.get_by_role("link", name="Download OpenVPN profile (.ovpn)").count() == 0
                assert wait_until(lambda: not lab.ping(TUNNEL_SERVER, timeout=1), 10)

                assert not_reloaded(bob_list) and "anna-laptop" not in bob_list.content()
                assert anna.errors == [f"422 {base_url}/openvpn/clients/new"] and bob.errors == []  # the bad name
        finally:
            anna.close()
            bob.close()
