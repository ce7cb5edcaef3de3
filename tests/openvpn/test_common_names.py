"""Client names belong to the tenant, certificate common names to the server (issue 12, section 3).

A client's name is unique within its tenant only; its certificate gets a common name of the portal's, unique per
server, that tells nothing of other tenants. The scripts, revocation and monitoring use the common name; the
download keeps the tenant's name. The server is the fake runner of test_openvpn.py (the real scripts run in
tests/system/test_openvpn_lab.py and test_openvpn_names_lab.py); the migration is tested on a fresh SQLite file.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import column, func, insert, select, table, update

from portal import create_app
from portal.audit.models import AuditEvent
from portal.audit.service import Actor
from portal.extensions import db
from portal.openvpn import drivers as ovpn_driver
from portal.openvpn import servers
from portal.openvpn.jobs import poll_servers
from portal.openvpn.models import (
    CLIENT_NAME,
    COMMON_NAME_MAX,
    OpenVpnServer,
    Status,
    VpnClient,
    is_client_name,
    new_common_name,
)
from portal.types import utcnow
from tests.conftest import ROOT, login, post, run_worker, unique
from tests.openvpn.test_openvpn import FakeServer, add_client, bundle_for, client_id_from, load, name_suffix
from tests.web.test_migrations import POSTGRES, fresh_postgres, fresh_sqlite

SCRIPT = ROOT / "portal" / "openvpn" / "scripts" / "ovpn-client.sh"


@pytest.fixture
def fake(app, monkeypatch) -> FakeServer:
    """A fake server behind every runner, and one new server row, the only one open to new clients: the
    clients of both tenants in a test land on the same server."""
    server = FakeServer()
    monkeypatch.setattr(ovpn_driver, "runner_for", lambda kind, row, label: server)
    with app.app_context():
        db.session.execute(update(OpenVpnServer).values(accepts_new_clients=False))
        servers.save_server(Actor.system("test"), servers.ServerSettings(
            name=unique("names-ovpn").replace(" ", "-"), remote_host="vpn.test.example", driver="local",
            base_dir="/nonexistent/openvpn"))
        db.session.commit()
    return server


@pytest.fixture
def other(app, other_tenant_admin):
    """The second tenant's admin, logged in; `.tenant_id` says which tenant."""
    client = app.test_client()
    assert login(client, other_tenant_admin[1]).status_code == 302
    client.tenant_id = other_tenant_admin[0]
    return client


def provision(app, client, name: str) -> VpnClient:
    response = add_client(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    client_id = client_id_from(response)
    run_worker(app)
    row = load(app, client_id)
    assert row.status == Status.ACTIVE, row.last_error
    return row


def tenant_audit_text(app, tenant_id: int) -> str:
    with app.app_context():
        return json.dumps(list(db.session.scalars(select(AuditEvent.details).where(AuditEvent.tenant_id == tenant_id))))


# --- the common name (pure) -------------------------------------------------------------------------------------

SCRIPT_RULE = re.search(r"^NAME_RULE='(.+)'$", SCRIPT.read_text(), re.MULTILINE).group(1)
NAME_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"


def longest_and_oddest_names() -> list[str]:
    """Names the client form accepts: the longest, every allowed character, the odd ones (dots, dashes,
    underscores after the first character), and a seeded random sample."""
    names = ["a", "0", "A" * 64, "9" * 64, "x" + "." * 63, "x" + "-" * 63, "x" + "_" * 63, "server1",
             ("Laptop_of.Anna-" * 5)[:64], NAME_CHARACTERS[:64], NAME_CHARACTERS[-64:].lstrip("_.-")]
    rng = random.Random(12)
    for _ in range(300):
        length = rng.randint(1, 64)
        names.append(rng.choice(NAME_CHARACTERS[:62]) + "".join(rng.choices(NAME_CHARACTERS, k=length - 1)))
    assert all(CLIENT_NAME.fullmatch(name) and is_client_name(name) for name in names)
    return names


TENANT_IDS = (1, 12, 2**31 - 1, 2**63 - 1)  # up to the largest id SQLite can hand out


def test_every_acceptable_name_gets_a_common_name_the_portal_and_the_script_accept() -> None:
    made = []
    for tenant_id in TENANT_IDS:
        for name in longest_and_oddest_names():
            common_name = new_common_name(tenant_id, name)
            assert len(common_name) <= COMMON_NAME_MAX and is_client_name(common_name), common_name
            assert re.fullmatch(SCRIPT_RULE, common_name) and common_name != "server", common_name
            assert common_name.startswith(f"t{tenant_id}-")
            made.append(common_name)
    assert len(set(made)) == len(made)  # random parts set them apart, even for one name in one tenant
    assert re.fullmatch(r"t12-laptop-1-[a-z2-7]{8}", new_common_name(12, "laptop-1"))


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_scripts_own_check_accepts_common_names() -> None:
    """The script's check_name (bash's regex engine, not Python's) on the longest common names."""
    names = [new_common_name(tenant_id, name) for tenant_id in TENANT_IDS for name in longest_and_oddest_names()[:12]]
    check = 'for name; do [[ $name =~ $0 && $name != server ]] || { echo "refused: $name"; exit 1; }; done'
    result = subprocess.run(["bash", "-c", check, SCRIPT_RULE, *names], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# --- names per tenant -------------------------------------------------------------------------------------------

def test_two_tenants_can_both_have_laptop_1_on_one_server(app, admin_client, other, fake):
    mine, theirs = provision(app, admin_client, "laptop-1"), provision(app, other, "laptop-1")
    assert mine.server_id == theirs.server_id and mine.name == theirs.name == "laptop-1"
    assert mine.common_name != theirs.common_name
    assert mine.common_name.startswith(f"t{admin_client.tenant_id}-laptop-1-")
    assert theirs.common_name.startswith(f"t{other.tenant_id}-laptop-1-")
    creates = [call[2] for call in fake.calls if call[1] == "create"]
    assert creates == [mine.common_name, theirs.common_name]  # the server only ever hears common names

    for client, row in ((admin_client, mine), (other, theirs)):
        download = client.get(f"/openvpn/clients/{row.id}/download.ovpn")
        assert download.headers["Content-Disposition"] == 'attachment; filename="laptop-1.ovpn"'
        assert f"CERT-{row.common_name}" in download.get_data(as_text=True)  # each its own certificate
        assert row.bundle == bundle_for(row.common_name)

    post(admin_client, f"/openvpn/clients/{mine.id}/revoke")
    run_worker(app)
    assert fake.calls[-1][1:] == ["revoke", mine.common_name]
    assert fake.revoked == {mine.common_name}
    assert load(app, mine.id).status == Status.REVOKED and load(app, theirs.id).status == Status.ACTIVE


def test_a_duplicate_within_a_tenant_is_refused_clearly_beside_the_field(app, admin_client, fake):
    name = f"Laptop-{name_suffix()}"
    provision(app, admin_client, name)
    calls = len(fake.calls)
    response = add_client(admin_client, name.upper())
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error"' in page
    assert f"You already have a client named &#39;{name.upper()}&#39;" in page
    assert "cannot be reused, not even after it is revoked" in page
    assert "server" not in page.split('id="name-error"', 1)[1].split("</", 1)[0]
    assert len(fake.calls) == calls


def test_a_revoked_clients_name_stays_taken_within_the_tenant_only(app, admin_client, other, fake):
    row = provision(app, admin_client, f"gone-{name_suffix()}")
    post(admin_client, f"/openvpn/clients/{row.id}/revoke")
    run_worker(app)
    assert load(app, row.id).status == Status.REVOKED
    assert add_client(admin_client, row.name).status_code == 422
    assert provision(app, other, row.name).common_name != row.common_name


def test_nothing_in_the_other_tenants_answers_reveals_the_first_tenants_names(app, admin_client, other, fake):
    secret = f"ceo-laptop-{name_suffix()}"
    row = provision(app, admin_client, secret)

    # Taking the same name is not refused, so whether the first tenant has it cannot be learnt by trying.
    fresh = add_client(other, f"never-used-{name_suffix()}")
    taken_elsewhere = add_client(other, secret)
    assert fresh.status_code == taken_elsewhere.status_code == 303
    run_worker(app)
    theirs = load(app, client_id_from(taken_elsewhere))
    assert theirs.status == Status.ACTIVE and theirs.common_name != row.common_name

    pages = [other.get(path, follow_redirects=True) for path in (
        "/openvpn/clients", f"/openvpn/clients?q={secret[:10]}", f"/openvpn/clients/{theirs.id}",
        f"/openvpn/clients/{theirs.id}/panel", f"/openvpn/clients/{theirs.id}/download.ovpn", "/audit", "/",
        f"/openvpn/clients/{row.id}", f"/openvpn/clients/{row.id}/download.ovpn")]
    assert [page.status_code for page in pages[-2:]] == [404, 404]
    for page in pages:
        assert row.common_name not in page.get_data(as_text=True), page.request.path
    assert secret not in pages[-1].get_data(as_text=True)
    listing = pages[1].get_data(as_text=True)
    assert listing.count(secret) == 1  # their own client of that name, once
    assert row.common_name not in tenant_audit_text(app, other.tenant_id)


# --- monitoring by common name -----------------------------------------------------------------------------------

def test_sessions_are_matched_by_common_name_not_by_the_tenants_name(app, admin_client, other, fake):
    mine, theirs = provision(app, admin_client, "phone-1"), provision(app, other, "phone-1")

    def poll() -> tuple[bool, bool]:
        with app.app_context():
            poll_servers.enqueue()
        run_worker(app)
        return load(app, mine.id).connected, load(app, theirs.id).connected

    fake.sessions = ["phone-1"]  # a tenant's name means nothing to the server
    assert poll() == (False, False)
    fake.sessions = [mine.common_name]
    assert poll() == (True, False)
    fake.sessions = [theirs.common_name]
    assert poll() == (False, True)


# --- the migration ---------------------------------------------------------------------------------------------

BEFORE = "0010_api_tokens"
AFTER = "0011_openvpn_common_names"
# The tables as the migration finds them (not reflected: SQLite cannot reflect the expression indexes).
tenants = table("tenants", *map(column, ("id", "name", "router_to_router", "created_at")))
ovpn_servers = table("openvpn_servers", *map(column, (
    "id", "name", "remote_host", "remote_port", "protocol", "base_dir", "network", "netmask", "management_port",
    "driver", "accepts_new_clients", "ssh_port", "ssh_user", "created_at")))
clients = table("vpn_clients", *map(column, (
    "id", "tenant_id", "server_id", "name", "common_name", "status", "attempt", "created_at", "updated_at",
    "connected", "bytes_received", "bytes_sent")))


@pytest.mark.parametrize("fresh_database", [
    fresh_sqlite,
    *([fresh_postgres] if POSTGRES else []),  # PostgreSQL only when the test run uses it
], ids=lambda fresh: fresh.__name__.removeprefix("fresh_"))
def test_the_migration_keeps_certificate_names_and_renames_only_clashes_within_a_tenant(tmp_path, fresh_database):
    with fresh_database(tmp_path) as url:
        migrate_with_rows(create_app({"DATABASE_URL": url}))


def migrate_with_rows(app) -> None:
    try:
        with app.app_context():
            upgrade(revision=BEFORE)
            now = utcnow()
            with db.engine.begin() as connection:
                for tenant_id in (1, 2):
                    connection.execute(insert(tenants).values(id=tenant_id, name=f"T{tenant_id}",
                                                              router_to_router=False, created_at=now))
                for server_id in (1, 2):
                    connection.execute(insert(ovpn_servers).values(
                        id=server_id, name=f"s{server_id}", remote_host="vpn.example.net", remote_port=1194,
                        protocol="udp", base_dir="/etc/openvpn/portal", network="10.8.0.0", netmask="255.255.255.0",
                        management_port=7505, driver="local", accepts_new_clients=True, ssh_port=22,
                        ssh_user="root", created_at=now))
                # Before: unique per server. Tenant 1 has "Laptop" on both servers (and already a "laptop-3");
                # tenant 2 has "other" on server 1.
                for client_id, tenant_id, server_id, name in ((1, 1, 1, "Laptop"), (2, 2, 1, "other"),
                                                              (3, 1, 2, "laptop"), (4, 1, 2, "laptop-3")):
                    connection.execute(insert(clients).values(
                        id=client_id, tenant_id=tenant_id, server_id=server_id, name=name, status="active",
                        attempt=1, created_at=now, updated_at=now, connected=False, bytes_received=0, bytes_sent=0))

            upgrade(revision=AFTER)
            with db.engine.connect() as connection:
                rows = connection.execute(select(clients.c.id, clients.c.name, clients.c.common_name)
                                          .order_by(clients.c.id)).all()
            assert [tuple(row) for row in rows] == [(1, "Laptop", "Laptop"), (2, "other", "other"),
                                                    (3, "laptop-3-2", "laptop"), (4, "laptop-3", "laptop-3")]
            with db.engine.connect() as connection:  # the new rule: another tenant may now take "Laptop"
                connection.execute(insert(clients).values(
                    id=5, tenant_id=2, server_id=1, name="LAPTOP", common_name="t2-LAPTOP-abcdefgh", status="pending",
                    attempt=0, created_at=now, updated_at=now, connected=False, bytes_received=0, bytes_sent=0))
                connection.rollback()

            downgrade(revision=BEFORE)  # the older code sends `name` to the server: it gets the common names back
            with db.engine.connect() as connection:
                names = connection.execute(select(clients.c.name).order_by(clients.c.id)).scalars().all()
                assert names == ["Laptop", "other", "laptop", "laptop-3"]
                assert "common_name" not in {column["name"] for column in
                                             db.inspect(connection).get_columns("vpn_clients")}
            upgrade(revision=AFTER)  # and up again (not to the head: later migrations are not this test's)
            with db.engine.connect() as connection:
                assert connection.execute(select(func.count()).select_from(clients)).scalar() == 4
    finally:
        with app.app_context():
            db.engine.dispose()


def test_a_common_name_clash_is_retried_with_another_one(app, admin_client, fake, monkeypatch):
    taken = provision(app, admin_client, f"first-{name_suffix()}").common_name
    made = iter([taken, None])  # the first try draws a taken common name, the retry a fresh one

    import portal.openvpn.service as service

    def drawn(tenant_id: int, name: str) -> str:
        value = next(made)
        return value if value is not None else new_common_name(tenant_id, name)

    monkeypatch.setattr(service, "new_common_name", drawn)
    row = provision(app, admin_client, f"second-{name_suffix()}")
    assert row.common_name != taken
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(VpnClient.common_name == taken)) == 1
