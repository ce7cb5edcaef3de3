"""Tests for portal/audit: events written with the change they record, the hash chain, append-only rows."""

from __future__ import annotations

import json
import os
import re
import threading
from contextlib import contextmanager

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from portal.audit.models import AuditEvent, AuditHead
from portal.audit.service import Actor, record, verify_chain
from portal.extensions import db
from portal.tenancy import service as tenancy
from portal.wireguard import service as wireguard
from portal.wireguard.models import Router
from tests.conftest import add_router, post, run_worker, unique

TEST = Actor.system("test")
THREADS = 8
ROUTERS_PER_THREAD = 3
# conftest has set the database URL by the time this module is imported.
POSTGRES = os.environ["PORTAL_DATABASE_URL"].startswith("postgresql")
# As created by migrations/versions/0001_core_schema.py.
SQLITE_NO_UPDATE_TRIGGER = ("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
                            "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END")


def run_cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def add(client, name: str) -> int:
    response = add_router(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def tenant_events(app, tenant_id: int) -> list[tuple[str, str | None, int | None]]:
    """(action, target type, target id) of the tenant's events, oldest first."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(AuditEvent.action, AuditEvent.target_type, AuditEvent.target_id)
            .where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id))]


def count_events(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(AuditEvent))


@contextmanager
def triggers_off():
    """Let this transaction change audit rows by hand, as an attacker with database access could."""
    if POSTGRES:
        db.session.execute(text("SET LOCAL session_replication_role = replica"))  # superuser only
        yield
    else:
        db.session.execute(text("DROP TRIGGER audit_events_no_update"))
        yield
        db.session.execute(text(SQLITE_NO_UPDATE_TRIGGER))


def overwrite_details(event_id: int, details: dict) -> None:
    with triggers_off():
        db.session.execute(update(AuditEvent).where(AuditEvent.id == event_id).values(details=details)
                           .execution_options(synchronize_session=False))
    db.session.commit()


# Written with the change ------------------------------------------------------------------------------

def test_adding_a_router_writes_its_audit_events(app, admin_client):
    chosen = unique("req").replace(" ", "-")
    response = post(admin_client, "/routers/new", {"name": "Audited"}, headers={"X-Request-ID": chosen})
    assert response.status_code == 303
    request_id = response.headers["X-Request-ID"]
    assert request_id != chosen  # no trusted proxy: a client does not choose what the audit log says
    router_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        configuration_id = db.session.get(Router, router_id).current_configuration.id
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.request_id == request_id)
                                    .order_by(AuditEvent.id)).all()
        assert [(event.action, event.target_type, event.target_id) for event in events] == [
            ("router.created", "routers", router_id),
            ("configuration.created", "vpn_configurations", configuration_id),
        ]
        assert {event.tenant_id for event in events} == {admin_client.tenant_id}
        assert events[0].details == {"name": "Audited"}
        assert events[0].actor_label.startswith("admin-")
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "router.created" in page and "configuration.created" in page


def test_a_failed_add_writes_no_audit_event(app, admin_client):
    add(admin_client, "Edge")
    before = tenant_events(app, admin_client.tenant_id)

    response = add_router(admin_client, "edge")

    assert response.status_code == 422
    assert "You already have a router named" in response.get_data(as_text=True)
    assert tenant_events(app, admin_client.tenant_id) == before


def test_a_rolled_back_change_takes_its_audit_events_with_it(app, admin_client):
    before = count_events(app)
    with app.app_context():
        wireguard.add_router(TEST, admin_client.tenant_id, "Never")
        db.session.rollback()
        assert verify_chain().ok
    assert count_events(app) == before


# The hash chain ---------------------------------------------------------------------------------------

def test_audit_verify_command_reports_every_event(app, admin_client):
    add(admin_client, "Verified")
    result = run_cli(app, "audit", "verify")
    assert result.exit_code == 0, result.output
    assert f"audit log intact: {count_events(app)} events verified" in result.output


def test_audit_verify_names_a_tampered_event(app, admin_client):
    router_id = add(admin_client, "Tampered")
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(
            AuditEvent.action == "router.created", AuditEvent.target_id == router_id)).one()
        event_id, original = event.id, dict(event.details)
        db.session.rollback()
        overwrite_details(event_id, {**original, "name": "Innocent"})
    try:
        result = run_cli(app, "audit", "verify")
        assert result.exit_code == 1
        assert re.search(rf"audit log broken at event {event_id}\b.*content does not match its hash", result.output)
    finally:
        with app.app_context():
            overwrite_details(event_id, original)
    result = run_cli(app, "audit", "verify")
    assert result.exit_code == 0, result.output


def change_statement(kind: str, event_id: int):
    if kind == "TRUNCATE":
        return text("TRUNCATE audit_events")
    change = update(AuditEvent).values(action="nothing.happened") if kind == "UPDATE" else delete(AuditEvent)
    return change.where(AuditEvent.id == event_id).execution_options(synchronize_session=False)


# SQLite has no TRUNCATE; PostgreSQL needs its own trigger for it.
@pytest.mark.parametrize("kind", ["UPDATE", "DELETE", *(["TRUNCATE"] if POSTGRES else [])])
def test_the_database_rejects_changing_audit_events(app, admin_client, kind):
    add(admin_client, "Append only")
    with app.app_context():
        event_id = db.session.scalar(select(func.max(AuditEvent.id)))
        before = db.session.scalar(select(func.count()).select_from(AuditEvent))
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(change_statement(kind, event_id))
        db.session.rollback()
        assert db.session.get(AuditEvent, event_id).action != "nothing.happened"
        assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before
        assert verify_chain().ok



# No secrets -------------------------------------------------------------------------------------------

def test_no_audit_event_carries_a_configuration_secret(app, admin_client):
    router_id = add(admin_client, "Secretive")
    with app.app_context():
        configuration = db.session.get(Router, router_id).current_configuration
        configuration_id, secrets = configuration.id, (configuration.private_key, configuration.preshared_key)
    run_worker(app)
    download = admin_client.get(f"/configurations/{configuration_id}/download.rsc")
    assert download.status_code == 200
    assert secrets[0] in download.get_data(as_text=True)

    with app.app_context():
        events = db.session.scalars(select(AuditEvent)).all()
        assert "configuration.downloaded" in {event.action for event in events}
        everything = json.dumps([[event.details, event.actor_label, event.action] for event in events])
    for secret in secrets:
        assert secret not in everything


@pytest.mark.parametrize("details", [
    {"private_key": "x"},
    {"Preshared": "x"},
    {"password": "x"},
    {"api_token": "x"},
    {"router": {"secret": "x"}},
    {"peers": [{"public_key": "p"}, {"preshared_key": "x"}]},
])
def test_record_refuses_details_that_name_a_secret(app_context, details):
    before = db.session.get(AuditHead, 1).last_hash
    with pytest.raises(ValueError, match="secrets"):
        record("router.created", TEST, tenant_id=None, details=details)
    assert db.session.get(AuditHead, 1).last_hash == before


# Concurrency ------------------------------------------------------------------------------------------

def seeded_tenants(app, count: int) -> list[int]:
    """Tenants whose subnets exist already, so only the audit log is shared between them."""
    with app.app_context():
        tenants = [tenancy.create_tenant(TEST, unique("Concurrent")) for _ in range(count)]
        for tenant in tenants:
            wireguard.add_router(TEST, tenant.id, "Seed")
        db.session.commit()
        return [tenant.id for tenant in tenants]


def test_concurrent_appends_keep_one_chain(app):
    tenant_ids = seeded_tenants(app, THREADS)
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def add_routers(tenant_id: int) -> None:
        try:
            with app.app_context():
                start.wait(timeout=30)
                for number in range(ROUTERS_PER_THREAD):
                    wireguard.add_router(TEST, tenant_id, f"Router {number}")
                    db.session.commit()
        except BaseException as error:  # reported below, from the test's own thread
            errors.append(error)

    threads = [threading.Thread(target=add_routers, args=(tenant_id,)) for tenant_id in tenant_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    with app.app_context():
        created = db.session.scalar(select(func.count()).where(
            AuditEvent.tenant_id.in_(tenant_ids), AuditEvent.action == "router.created"))
        assert created == THREADS * (1 + ROUTERS_PER_THREAD)
        prev_hashes = db.session.scalars(select(AuditEvent.prev_hash)).all()
        assert len(prev_hashes) == len(set(prev_hashes)), "two events follow the same event: the chain forked"
    result = run_cli(app, "audit", "verify")
    assert result.exit_code == 0, result.output
