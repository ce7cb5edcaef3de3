"""OpenVPN clients through the pages a tenant admin uses, and their jobs in a real RQ worker.

The OpenVPN server here is a fake runner that speaks the script contract (`ovpn-client create|revoke|status`,
exit 75 for a busy PKI); it stands in for the server only to test the portal's logic: forms, tenancy, the
state machine, fencing, retries, and what reaches the audit log. The real scripts on a real server are
exercised by tests/system/test_openvpn_lab.py.

The golden file tests/golden/client.ovpn is compared byte for byte; after an intended change rewrite it with
`UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/openvpn/test_openvpn.py -k golden` and review the diff.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import undefer

from portal import remote
from portal.audit.models import AuditEvent
from portal.audit.service import Actor
from portal.extensions import db
from portal.jobs import queue
from portal.openvpn import servers, service
from portal.openvpn.drivers import parse_create, parse_status
from portal.openvpn.jobs import poll_servers, provision_client, revoke_client, sweep
from portal.openvpn.models import OpenVpnServer, Status, VpnClient
from portal.openvpn.render import download_filename, render_ovpn
from portal.ssh import CommandResult
from tests.conftest import login, post, run_worker, serve_openvpn_through, unique

GOLDEN = Path(__file__).parent.parent / "golden"
KEY_MARKER = "PRIVATE KEY"


def bundle_for(name: str) -> str:
    return (f"<ca>\n-----BEGIN CERTIFICATE-----\nCA-{name}\n-----END CERTIFICATE-----\n</ca>\n"
            f"<cert>\n-----BEGIN CERTIFICATE-----\nCERT-{name}\n-----END CERTIFICATE-----\n</cert>\n"
            f"<key>\n-----BEGIN {KEY_MARKER}-----\nKEY-{name}\n-----END {KEY_MARKER}-----\n</key>\n"
            f"<tls-crypt>\n-----BEGIN OpenVPN Static key V1-----\nTC\n-----END OpenVPN Static key V1-----\n"
            "</tls-crypt>\n")


@dataclass
class FakeServer:
    """The server side of the script contract, in memory. `failures` are consumed one per call: an exception
    to raise, or an (exit status, stderr) pair to return."""

    issued: dict[str, str] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    sessions: list[str] = field(default_factory=list)
    failures: list = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)

    def run(self, argv, stdin=None) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if self.failures:
            failure = self.failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            exit_status, stderr = failure
            return CommandResult(" ".join(argv[:2]), exit_status, "", stderr)
        if argv[0] == "bash":
            return self._ok("created the PKI\nwrote server.conf\n")
        command = argv[1]
        if command == "create":
            name = argv[2]
            if name in self.revoked:
                return CommandResult("create", 3, "", f"ovpn-client: {name} is revoked\n")
            serial = self.issued.setdefault(name, f"{0xA0 + len(self.issued):X}" + "0" * 30)
            return self._ok(f"# serial: {serial}\n# not-after: 2028-03-01T12:00:00Z\n{bundle_for(name)}",
                            f"ovpn-client: issued a certificate for {name}\n")
        if command == "revoke":
            name = argv[2]
            if name in self.revoked:
                outcome = "already revoked"
            elif name in self.issued:
                self.revoked.add(name)
                outcome = "revoked"
            else:
                outcome = "absent"
            return self._ok(f"{outcome}\n", "ovpn-client: installed a new CRL (1 revoked)\n")
        if command == "status":
            return self._ok("".join(f"client\t{name}\t192.0.2.10:40000\t10.8.0.2\t1234\t5678\t1700000000\n"
                                    for name in self.sessions))
        return CommandResult(command, 2, "", "usage\n")

    @staticmethod
    def _ok(stdout: str, stderr: str = "") -> CommandResult:
        return CommandResult("ovpn-client", 0, stdout, stderr)


@pytest.fixture
def fake(app, monkeypatch) -> FakeServer:
    """A fake server behind every OpenVPN server's runner, and one `local` server row open to new clients."""
    server = FakeServer()
    serve_openvpn_through(app, monkeypatch, server)
    return server


def add_client(client, name: str, **kwargs):
    return post(client, "/openvpn/clients/new", {"name": name}, token_page="/openvpn/clients/new", **kwargs)


def client_id_from(response) -> int:
    return int(response.headers["Location"].rsplit("/", 1)[1])


def load(app, client_id: int) -> VpnClient:
    with app.app_context():
        row = db.session.get(VpnClient, client_id, options=[undefer(VpnClient.bundle)])  # the tests read it detached
        db.session.expunge(row)
        return row


def actions_for(app, client_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.target_type == "vpn_clients", AuditEvent.target_id == client_id).order_by(AuditEvent.id)))


def server_actions(server_id: int) -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.target_type == "openvpn_servers", AuditEvent.target_id == server_id).order_by(AuditEvent.id)))


def events_for(app, client_id: int, action: str) -> list[dict]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.target_type == "vpn_clients", AuditEvent.target_id == client_id,
            AuditEvent.action == action).order_by(AuditEvent.id)))


def tenant_event_count(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).where(AuditEvent.tenant_id == tenant_id))


def client_count(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).where(VpnClient.tenant_id == tenant_id))


def provisioned(app, client, name: str) -> int:
    response = add_client(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    client_id = client_id_from(response)
    run_worker(app)
    assert load(app, client_id).status == Status.ACTIVE
    return client_id


def name_suffix() -> str:
    return unique("x").split(" ", 1)[1]


# --- rendering (pure) -----------------------------------------------------------------------------------------

GOLDEN_CLIENT = SimpleNamespace(name="laptop-anna", bundle=bundle_for("laptop-anna"))
GOLDEN_SERVER = SimpleNamespace(remote_host="vpn.example.net", remote_port=1194, protocol="udp")


def test_golden_ovpn() -> None:
    rendered = render_ovpn(GOLDEN_CLIENT, GOLDEN_SERVER).encode("ascii")
    path = GOLDEN / "client.ovpn"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(rendered)
    assert path.read_bytes() == rendered


def test_render_puts_the_settings_first_and_the_blocks_once() -> None:
    text = render_ovpn(GOLDEN_CLIENT, SimpleNamespace(remote_host="192.0.2.1", remote_port=443, protocol="tcp"))
    lines = text.splitlines()
    assert lines[:4] == ["client", "dev tun", "proto tcp", "remote 192.0.2.1 443"]
    assert "verify-x509-name server name" in lines and "remote-cert-tls server" in lines
    for block in ("ca", "cert", "key", "tls-crypt"):
        assert text.count(f"<{block}>") == 1
    assert text.endswith("</tls-crypt>\n")


@pytest.mark.parametrize("server", [
    SimpleNamespace(remote_host="vpn.example.net\nscript-security 2", remote_port=1194, protocol="udp"),
    SimpleNamespace(remote_host="vpn.example.net", remote_port=0, protocol="udp"),
    SimpleNamespace(remote_host="vpn.example.net", remote_port=1194, protocol="icmp"),
])
def test_render_refuses_what_would_inject_directives(server) -> None:
    with pytest.raises(ValueError):
        render_ovpn(GOLDEN_CLIENT, server)


def test_render_needs_credentials_and_names_files_safely() -> None:
    with pytest.raises(ValueError):
        render_ovpn(SimpleNamespace(name="x", bundle=None), GOLDEN_SERVER)
    assert download_filename("laptop-anna") == "laptop-anna.ovpn"
    for bad in ('x"; y', "../x", ""):
        with pytest.raises(ValueError):
            download_filename(bad)


# --- parsing the script's output (pure) --------------------------------------------------------------------

def test_create_output_keeps_the_blocks_and_reads_serial_and_expiry() -> None:
    stdout = f"# serial: 0a1b\n# not-after: 2028-03-01T12:00:00Z\n{bundle_for('n')}"
    created = parse_create(CommandResult("create", 0, stdout, "issued\n"))
    assert created.serial == "0A1B" and created.not_after == datetime(2028, 3, 1, 12, tzinfo=UTC)
    assert created.bundle == bundle_for("n") and "# serial" not in created.bundle
    assert created.details() == {"exit_status": 0, "stderr": "issued", "serial": "0A1B",
                                 "not_after": "2028-03-01T12:00:00+00:00"}


@pytest.mark.parametrize("stdout", [
    f"# not-after: 2028-03-01T12:00:00Z\n{bundle_for('n')}",
    f"# serial: 0A\n# not-after: soon\n{bundle_for('n')}",
    f"# serial: 0A\n# not-after: 2028-03-01T12:00:00Z\n{bundle_for('n').split('<tls-crypt>')[0]}",
])
def test_incomplete_create_output_fails_without_quoting_it(stdout: str) -> None:
    with pytest.raises(remote.RemoteCommandFailed) as raised:
        parse_create(CommandResult("create", 0, stdout, ""))
    assert KEY_MARKER not in str(raised.value) and "KEY-n" not in str(raised.value)


def test_status_lines_are_parsed_and_junk_ignored() -> None:
    sessions = parse_status("client\tanna\t192.0.2.10:1194\t10.8.0.2\t10\t20\t1700000000\n"
                            "client\tbad;name\t1\t2\t3\t4\t5\nnoise\nclient\tben\t[2001:db8::1]:5\t\tx\t1\t0\n")
    assert [(s.name, s.real_address, s.bytes_received, s.bytes_sent) for s in sessions] == [
        ("anna", "192.0.2.10:1194", 10, 20)]
    assert sessions[0].connected_since == datetime.fromtimestamp(1700000000, UTC)


# --- adding clients -------------------------------------------------------------------------------------------

def test_add_client_provisions_it_and_the_ovpn_downloads(app, admin_client, fake):
    response = add_client(admin_client, "laptop-1")
    assert response.status_code == 303
    client_id = client_id_from(response)
    assert load(app, client_id).status == Status.PENDING
    run_worker(app)

    row = load(app, client_id)
    assert row.status == Status.ACTIVE and row.attempt == 1 and row.serial and row.not_after
    assert row.bundle == bundle_for(row.common_name) and row.activated_at  # issued under its common name
    with app.app_context():  # encrypted at rest
        stored = db.session.execute(text("SELECT bundle FROM vpn_clients WHERE id = :id"), {"id": client_id})
        assert KEY_MARKER not in stored.scalar_one()

    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "status-active" in page and row.serial in page and "download.ovpn" in page
    listing = admin_client.get("/openvpn/clients").get_data(as_text=True)
    assert "laptop-1" in listing and "status-active" in listing

    download = admin_client.get(f"/openvpn/clients/{client_id}/download.ovpn")
    assert download.status_code == 200 and download.headers["Cache-Control"] == "no-store"
    assert download.headers["Content-Disposition"] == 'attachment; filename="laptop-1.ovpn"'
    body = download.get_data(as_text=True)
    assert body.startswith("client\ndev tun\nproto udp\nremote vpn.test.example 1194\n")
    assert f"KEY-{row.common_name}" in body
    assert actions_for(app, client_id) == [
        "client.created", "client.provision.started", "client.provision.output", "client.provision.succeeded",
        "client.downloaded"]
    output = events_for(app, client_id, "client.provision.output")[0]
    assert output["serial"] == row.serial and output["exit_status"] == 0 and "issued" in output["stderr"]


@pytest.mark.parametrize(("name", "message"), [
    ("a;reboot", "letters, digits, dots"),
    ("../x", "letters, digits, dots"),
    ("$(id)", "letters, digits, dots"),
    ("a b", "letters, digits, dots"),
    ("-x", "letters, digits, dots"),
    ("a" * 65, "letters, digits, dots"),
    ("", "Give the client a name."),
    ("Server", "reserved"),
])
def test_bad_names_are_rejected_next_to_the_field_and_change_nothing(app, admin_client, fake, name, message):
    events = tenant_event_count(app, admin_client.tenant_id)
    response = add_client(admin_client, name)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error"' in page and message in page
    assert client_count(app, admin_client.tenant_id) == 0
    assert tenant_event_count(app, admin_client.tenant_id) == events
    assert fake.calls == []


def test_names_are_unique_per_tenant_regardless_of_case(app, admin_client, fake):
    name = f"Phone-{name_suffix()}"
    assert add_client(admin_client, name).status_code == 303
    events = tenant_event_count(app, admin_client.tenant_id)
    duplicate = add_client(admin_client, name.lower())
    assert duplicate.status_code == 422
    assert 'id="name-error"' in duplicate.get_data(as_text=True)
    assert "cannot be reused" in duplicate.get_data(as_text=True)
    assert tenant_event_count(app, admin_client.tenant_id) == events
    assert client_count(app, admin_client.tenant_id) == 1
    with app.app_context():
        existing = db.session.scalar(select(VpnClient).where(VpnClient.tenant_id == admin_client.tenant_id))
        db.session.add(VpnClient(tenant_id=existing.tenant_id, server_id=existing.server_id, name=name.swapcase(),
                                 common_name=f"other-{name_suffix()}"))
        with pytest.raises(IntegrityError):  # the database itself refuses, for requests that race the check
            db.session.flush()
        db.session.rollback()


def test_htmx_form_errors_come_back_as_the_form_fragment(admin_client, fake):
    response = add_client(admin_client, "a;reboot", headers={"HX-Request": "true"})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<form id="client-form"') and 'aria-invalid="true"' in body
    ok = add_client(admin_client, f"htmx-{name_suffix()}", headers={"HX-Request": "true"})
    assert ok.status_code == 200 and ok.headers["HX-Redirect"].startswith("/openvpn/clients/")


def test_list_searches_and_serves_its_table_to_htmx(app, admin_client, fake):
    for name in ("alpha", "bravo"):
        add_client(admin_client, f"{name}-{name_suffix()}")
    admin_client.get("/openvpn/clients")  # shows (and clears) the "added" messages
    page = admin_client.get("/openvpn/clients?q=alph").get_data(as_text=True)
    assert "alpha-" in page and "bravo-" not in page
    fragment = admin_client.get("/openvpn/clients?q=bra", headers={"HX-Request": "true"})
    assert fragment.get_data(as_text=True).lstrip().startswith('<div id="client-table"')
    assert "HX-Request" in fragment.headers["Vary"]
    assert admin_client.get("/openvpn/clients/999999").status_code == 404


def test_the_list_pages_newest_first_from_either_end_and_counts_a_new_client_at_once(app, admin_client, fake):
    names = [f"page{number}-{name_suffix()}" for number in range(5)]
    with app.app_context():
        for name in names:
            service.add_client(Actor.system("test"), admin_client.tenant_id, name).status = Status.REVOKED
            db.session.commit()  # revoked: no job of a later test's sweep picks them up
        for per_page in (1, 2, 3, 5):
            pages = [service.clients_page(admin_client.tenant_id, page=number, per_page=per_page)
                     for number in range(1, 7)]
            assert [client.name for page in pages for client in page.items] == names[::-1], per_page
            assert {page.total for page in pages} == {5} and not pages[-1].items
    assert "Page 1 of 1 (5 clients)" in admin_client.get("/openvpn/clients").get_data(as_text=True)
    add_client(admin_client, f"newest-{name_suffix()}")  # its hint retires the kept count
    listed = admin_client.get("/openvpn/clients").get_data(as_text=True)
    assert "Page 1 of 1 (6 clients)" in listed and listed.index("newest-") < listed.index(names[-1])


def test_client_panel_is_a_fragment_with_a_stable_id(app, admin_client, fake):
    client_id = client_id_from(add_client(admin_client, f"panel-{name_suffix()}"))
    body = admin_client.get(f"/openvpn/clients/{client_id}/panel", headers={"HX-Request": "true"}).get_data(
        as_text=True)
    assert body.lstrip().startswith('<div id="client-panel"') and "<html" not in body


# --- tenancy --------------------------------------------------------------------------------------------------

def test_another_tenant_gets_404_everywhere_and_changes_nothing(app, admin_client, other_tenant_admin, fake):
    name = f"private-{name_suffix()}"
    client_id = provisioned(app, admin_client, name)
    intruder = app.test_client()
    login(intruder, other_tenant_admin[1])
    for path in (f"/openvpn/clients/{client_id}", f"/openvpn/clients/{client_id}/panel",
                 f"/openvpn/clients/{client_id}/download.ovpn", f"/openvpn/clients/{client_id}/revoke"):
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert "belongs to someone else" in response.get_data(as_text=True)
    for path in (f"/openvpn/clients/{client_id}/revoke", f"/openvpn/clients/{client_id}/retry"):
        assert post(intruder, path, token_page="/openvpn/clients").status_code == 404, path
    assert name not in intruder.get("/openvpn/clients").get_data(as_text=True)
    assert load(app, client_id).status == Status.ACTIVE
    assert "client.downloaded" not in actions_for(app, client_id)


def test_platform_admins_do_not_see_tenant_clients_and_tenants_do_not_see_servers(app, admin_client, platform_admin):
    staff = app.test_client()
    login(staff, platform_admin)
    assert staff.get("/openvpn/clients").headers["Location"].endswith("/support")  # only during a visit
    assert admin_client.get("/admin/openvpn").status_code == 403
    assert "OpenVPN clients" in admin_client.get("/routers").get_data(as_text=True)
    assert "OpenVPN servers" in staff.get("/admin/openvpn").get_data(as_text=True)


# --- revocation -----------------------------------------------------------------------------------------------

def test_revoke_asks_for_confirmation_then_revokes_for_good(app, admin_client, fake):
    name = f"doomed-{name_suffix()}"
    client_id = provisioned(app, admin_client, name)
    confirm = admin_client.get(f"/openvpn/clients/{client_id}/revoke").get_data(as_text=True)
    assert "This cannot be undone" in confirm and "Revoke for good" in confirm
    assert load(app, client_id).status == Status.ACTIVE  # asking changes nothing

    assert post(admin_client, f"/openvpn/clients/{client_id}/revoke").status_code == 303
    assert "status-revoking" in admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    run_worker(app)

    row = load(app, client_id)
    assert row.status == Status.REVOKED and row.revoked_at and row.bundle is None and row.serial
    assert row.common_name in fake.revoked
    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "status-revoked" in page and "download.ovpn" not in page and "Revoke…" not in page
    assert admin_client.get(f"/openvpn/clients/{client_id}/download.ovpn").status_code == 303
    output = events_for(app, client_id, "client.revoke.output")
    assert [event["outcome"] for event in output] == ["revoked"] and "CRL" in output[0]["stderr"]

    # Revoking again is refused, and a re-run of the job is a no-op success.
    post(admin_client, f"/openvpn/clients/{client_id}/revoke")
    with app.app_context():
        revoke_client.enqueue(client_id)
        job = queue().enqueue(revoke_client.path, client_id)  # past the coalescing key
    run_worker(app)
    job.refresh()
    assert job.get_status() == "finished" and job.return_value() == "nothing to do"
    assert load(app, client_id).attempt == row.attempt
    assert actions_for(app, client_id).count("client.revoke.succeeded") == 1


def test_revoking_a_client_that_never_reached_the_server_says_absent(app, admin_client, fake):
    fake.failures = [remote.RemoteCommandFailed("`ovpn-client create` exited 1: easyrsa failed")]
    client_id = client_id_from(add_client(admin_client, f"never-{name_suffix()}"))
    run_worker(app)
    assert load(app, client_id).status == Status.FAILED
    post(admin_client, f"/openvpn/clients/{client_id}/revoke")
    run_worker(app)
    assert load(app, client_id).status == Status.REVOKED
    assert events_for(app, client_id, "client.revoke.output")[0]["outcome"] == "absent"


def test_revocation_never_gives_up_and_the_reconciler_finishes_it(app, admin_client, fake):
    client_id = provisioned(app, admin_client, f"stubborn-{name_suffix()}")
    fake.failures = [remote.HostUnreachable("vpn.test.example: connection refused")] * 2 + [
        (1, "ovpn-client: the management interface did not answer in 5 s\n")]
    post(admin_client, f"/openvpn/clients/{client_id}/revoke")
    run_worker(app)
    for _ in range(2):  # unreachable twice, then the script fails: still revoking, retried from the database
        with app.app_context():
            assert any(f"OpenVPN client {client_id} (revoking)" in line for line in sweep(idle=timedelta(0)))
        run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.REVOKING and "management interface did not answer" in row.last_error
    assert row.bundle is not None
    assert "waiting for server" in admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)

    with app.app_context():
        sweep(idle=timedelta(0))
    run_worker(app)
    assert load(app, client_id).status == Status.REVOKED
    assert actions_for(app, client_id).count("client.revoke.succeeded") == 1


# --- provisioning: state machine, fencing, retries ------------------------------------------------------------

def test_a_revoked_client_is_never_provisioned_again(app, admin_client, fake):
    client_id = provisioned(app, admin_client, f"final-{name_suffix()}")
    post(admin_client, f"/openvpn/clients/{client_id}/revoke")
    run_worker(app)
    with app.app_context():
        assert service.claim(client_id, (Status.PENDING, Status.PROVISIONING), Status.PROVISIONING) is None
        queue().enqueue(provision_client.path, client_id)
    run_worker(app)
    assert load(app, client_id).status == Status.REVOKED
    assert post(admin_client, f"/openvpn/clients/{client_id}/retry").status_code == 303
    assert load(app, client_id).status == Status.REVOKED


@pytest.mark.parametrize("failure", [
    remote.HostUnreachable("vpn.test.example: connection refused"),
    (75, "ovpn-client: the PKI at /x/pki is busy (lock held over 20 s)\n"),
], ids=["unreachable", "pki-busy"])
def test_transient_errors_are_retried_then_succeed(app, admin_client, fake, failure):
    fake.failures = [failure]
    client_id = client_id_from(add_client(admin_client, f"flaky-{name_suffix()}"))
    run_worker(app)
    assert load(app, client_id).status == Status.PENDING
    with app.app_context():
        sweep(idle=timedelta(0))
    run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.ACTIVE and row.attempt == 2 and row.last_error is None
    assert actions_for(app, client_id) == [
        "client.created", "client.provision.started", "client.provision.retry", "client.provision.started",
        "client.provision.output", "client.provision.succeeded"]


def test_an_unreachable_server_leaves_the_client_waiting_for_the_reconciler(app, admin_client, fake):
    fake.failures = [remote.HostUnreachable("vpn.test.example: connection refused")]
    client_id = client_id_from(add_client(admin_client, f"waiting-{name_suffix()}"))
    run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.PENDING and row.attempt == 1 and row.retry_at is not None
    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "waiting for server: vpn.test.example: connection refused" in page
    assert actions_for(app, client_id)[-1] == "client.provision.retry"

    dry_run = app.test_cli_runner().invoke(args=["openvpn", "reconcile", "--dry-run"]).output
    assert f"would OpenVPN client {client_id} (pending): enqueue provision_client" in dry_run
    assert app.test_cli_runner().invoke(args=["openvpn", "reconcile"]).exit_code == 0
    run_worker(app)
    assert load(app, client_id).status == Status.ACTIVE


def test_a_script_failure_fails_with_exit_status_and_stderr_and_can_be_retried(app, admin_client, fake):
    fake.failures = [(3, "ovpn-client: laptop is revoked\n")]
    client_id = client_id_from(add_client(admin_client, f"refused-{name_suffix()}"))
    run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.FAILED and row.attempt == 1  # not retried
    assert row.last_error == "`ovpn-client create` exited 3: ovpn-client: laptop is revoked"
    failed = events_for(app, client_id, "client.provision.failed")
    assert failed == [{"attempt": 1, "error": row.last_error}]
    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "laptop is revoked" in page and "Retry provisioning" in page

    assert post(admin_client, f"/openvpn/clients/{client_id}/retry").status_code == 303
    run_worker(app)
    assert load(app, client_id).status == Status.ACTIVE


def test_the_audit_log_never_holds_key_material(app, admin_client, fake):
    client_id = provisioned(app, admin_client, f"secret-{name_suffix()}")
    admin_client.get(f"/openvpn/clients/{client_id}/download.ovpn")
    post(admin_client, f"/openvpn/clients/{client_id}/revoke")
    run_worker(app)
    with app.app_context():
        details = db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.target_type == "vpn_clients", AuditEvent.target_id == client_id)).all()
    text = json.dumps(details)
    assert "BEGIN" not in text and "KEY-" not in text and "CERT-" not in text


# --- monitoring -----------------------------------------------------------------------------------------------

def test_polling_shows_who_is_connected_now(app, admin_client, fake):
    name = f"online-{name_suffix()}"
    client_id = provisioned(app, admin_client, name)
    fake.sessions = [load(app, client_id).common_name]  # the server knows it by its common name
    with app.app_context():
        poll_servers.enqueue()
    run_worker(app)
    row = load(app, client_id)
    assert row.connected and row.real_address == "192.0.2.10:40000" and row.virtual_address == "10.8.0.2"
    assert (row.bytes_received, row.bytes_sent) == (1234, 5678) and row.last_seen_at
    page = admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)
    assert "status-online" in page and "192.0.2.10:40000" in page and "1.2 kB" in page
    assert "status-online" in admin_client.get("/openvpn/clients").get_data(as_text=True)

    fake.sessions = []
    with app.app_context():
        poll_servers.enqueue()
    run_worker(app)
    assert not load(app, client_id).connected
    assert "not connected" in admin_client.get(f"/openvpn/clients/{client_id}").get_data(as_text=True)


def test_an_unreachable_server_is_noted_by_the_poll_not_fatal(app, fake):
    fake.failures = [remote.HostUnreachable("vpn.test.example: timed out")] * 20
    with app.app_context():
        poll_servers.enqueue()
    run_worker(app)
    with app.app_context():
        errors = db.session.scalars(select(OpenVpnServer.last_poll_error)).all()
    assert "vpn.test.example: timed out" in errors


# --- servers --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("field_name", "value", "message"), [
    ("remote_host", "vpn example", "host name"),
    ("base_dir", "relative/dir", "absolute path"),
    ("base_dir", "/etc/../root", "absolute path"),
    ("network", "10.8.0.1", "Not a network"),
    ("ssh_host_key", "ssh-ed25519 !!!", "base64"),
])
def test_server_form_errors_appear_next_to_the_field(app, platform_admin, field_name, value, message):
    staff = app.test_client()
    login(staff, platform_admin)
    name = f"srv-{name_suffix()}"
    data = {"name": name, "remote_host": "vpn.example.net", "remote_port": 1194, "protocol": "udp",
            "base_dir": "/etc/openvpn/portal", "network": "10.8.0.0", "netmask": "255.255.255.0",
            "management_port": 7505, "driver": "local", "ssh_port": 22, "ssh_user": "root", field_name: value}
    response = post(staff, "/admin/openvpn/new", data, token_page="/admin/openvpn/new")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'id="{field_name}-error"' in page and message in page
    with app.app_context():
        assert servers.server_named(name) is None


def test_platform_admin_adds_and_edits_a_server_and_it_is_audited(app, platform_admin):
    staff = app.test_client()
    login(staff, platform_admin)
    name = f"srv-{name_suffix()}"
    data = {"name": name, "remote_host": "vpn2.example.net", "remote_port": 1194, "protocol": "tcp",
            "base_dir": "/srv/ovpn", "network": "10.9.0.0", "netmask": "255.255.255.0", "management_port": 7505,
            "driver": "local", "ssh_port": 22, "ssh_user": "root"}
    assert post(staff, "/admin/openvpn/new", data, token_page="/admin/openvpn/new").status_code == 303
    with app.app_context():
        server = servers.server_named(name)
        server_id = server.id
        # Closed to new clients, so the other tests' clients do not land on it.
    edit = {**data, "accepts_new_clients": ""}
    assert post(staff, f"/admin/openvpn/{server_id}/edit", edit, token_page="/admin/openvpn/new").status_code == 303
    page = staff.get("/admin/openvpn").get_data(as_text=True)
    assert name in page and "tcp vpn2.example.net:1194" in page and "closed to new clients" in page
    with app.app_context():
        actions = server_actions(server_id)
        assert actions == ["openvpn_server.created", "openvpn_server.updated"]
        assert servers.server_named(name).accepts_new_clients is False


def test_cli_adds_lists_and_bootstraps_servers(app, fake):
    name = f"cli-{name_suffix()}"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["openvpn", "add-server", name, "--remote-host", "vpn3.example.net",
                                 "--driver", "local", "--base-dir", "/srv/cli"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        server = servers.server_named(name)
        server.accepts_new_clients = False
        db.session.commit()
    assert name in runner.invoke(args=["openvpn", "list"]).output
    result = runner.invoke(args=["openvpn", "bootstrap", name])
    assert result.exit_code == 0 and result.output == "created the PKI\nwrote server.conf\n"
    assert fake.calls[-1][:2] == ["bash", "-c"] and fake.calls[-1][3:] == [
        "ovpn-bootstrap", "/srv/cli", "10.8.0.0", "255.255.255.0", "1194", "udp", "7505"]
    fake.failures = [(1, "ovpn-bootstrap: openvpn is not installed\n")]
    failed = runner.invoke(args=["openvpn", "bootstrap", name])
    assert failed.exit_code == 1 and "openvpn is not installed" in failed.output
    with app.app_context():
        server = servers.server_named(name)
        assert "openvpn is not installed" in server.last_bootstrap_result
        actions = server_actions(server.id)
    assert actions == ["openvpn_server.created", "openvpn_server.bootstrapped", "openvpn_server.bootstrap.failed"]
    assert runner.invoke(args=["openvpn", "bootstrap", "no-such-server"]).exit_code == 1


def test_the_bootstrap_button_runs_a_job_and_shows_its_result(app, platform_admin, fake):
    name = f"button-{name_suffix()}"
    with app.app_context():
        server = servers.save_server(Actor.system("test"), servers.ServerSettings(
            name=name, remote_host="vpn4.example.net", driver="local", base_dir="/srv/button",
            accepts_new_clients=False))
        db.session.commit()
        server_id = server.id
    staff = app.test_client()
    login(staff, platform_admin)
    assert post(staff, f"/admin/openvpn/{server_id}/bootstrap", token_page="/admin/openvpn").status_code == 303
    run_worker(app)
    page = staff.get("/admin/openvpn").get_data(as_text=True)
    assert "created the PKI; wrote server.conf" in page and "server at 10.8.0.1" in page


def test_without_a_server_open_the_clients_page_says_so_and_offers_no_add(app, admin_client):
    from sqlalchemy import update

    from portal.openvpn.models import OpenVpnServer

    with app.app_context():
        open_ids = db.session.scalars(select(OpenVpnServer.id).where(OpenVpnServer.accepts_new_clients)).all()
        db.session.execute(update(OpenVpnServer).values(accepts_new_clients=False))
        db.session.commit()
    try:
        page = admin_client.get("/openvpn/clients").get_data(as_text=True)
        assert "No OpenVPN server takes new clients yet" in page and "Add your first client" not in page
        assert 'href="/openvpn/clients/new"' not in page
    finally:
        with app.app_context():
            db.session.execute(update(OpenVpnServer).where(OpenVpnServer.id.in_(open_ids))
                               .values(accepts_new_clients=True))
            db.session.commit()
