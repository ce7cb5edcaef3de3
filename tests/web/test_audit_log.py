"""The audit log as people read it: targets named and linked, filters, keyset pages, the CSV export, and
another tenant's events never shown."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from portal.audit.models import AuditEvent
from portal.audit.service import Actor, record, verify_chain
from portal.extensions import db
from portal.tenancy.models import Tenant, User
from portal.wireguard import service as wireguard
from portal.wireguard.models import Router, Status, VpnConfiguration
from tests.conftest import add_router, login, router_id_from
from tests.web.test_impersonation import staff_client, start_visit

TEST = Actor.system("test")
FIELD_ERROR = re.compile(r'<p class="field-error" id="([\w-]+)-error">([^<]+)</p>')


def page_of(client, path: str = "/audit", **params):
    response = client.get(path, query_string=params)
    assert response.status_code in (200, 422), response.status_code
    return response


def event_ids(html: str) -> list[int]:
    """The ids in the events table, top to bottom."""
    body = html.split('<div class="table-scroll">', 1)[1].split("</table>", 1)[0]
    return [int(found) for found in re.findall(r"<tr>\s*<td>(\d+)</td>", body)]


def tenant_event_ids(app, tenant_id: int, **where) -> list[int]:
    with app.app_context():
        query = select(AuditEvent.id).where(AuditEvent.tenant_id == tenant_id).order_by(AuditEvent.id.desc())
        for column, value in where.items():
            query = query.where(getattr(AuditEvent, column) == value)
        return list(db.session.scalars(query))


def chain_holds(app) -> None:
    with app.app_context():
        assert verify_chain().ok


def add(client, name: str) -> int:
    return router_id_from(add_router(client, name))


def record_many(app, tenant_id: int, count: int, action: str = "test.noted") -> None:
    with app.app_context():
        for number in range(count):
            record(action, TEST, tenant_id=tenant_id, details={"n": number})
        db.session.commit()


def export(client, path: str = "/audit/export.csv", **params) -> list[dict[str, str]]:
    response = client.get(path, query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.mimetype == "text/csv" and "attachment" in response.headers["Content-Disposition"]
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


# Targets, named and linked -----------------------------------------------------------------------------

def test_targets_are_named_and_link_to_their_pages(app, admin_client):
    router_id = add(admin_client, "Branch 1")
    html = page_of(admin_client).get_data(as_text=True)

    assert f'<a href="/routers/{router_id}">router Branch 1</a>' in html
    assert "vpn_configurations" not in html and "routers " not in html
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.tenant_id == admin_client.tenant_id))
        assert f'<a href="/users/{admin.id}">user {admin.email}</a>' in html


def test_configuration_events_link_to_their_router(app, admin_client):
    router_id = add(admin_client, "Branch 2")
    with app.app_context():
        configuration_id = db.session.get(Router, router_id).configurations[0].id
    html = page_of(admin_client, action="configuration.created").get_data(as_text=True)
    assert tenant_event_ids(app, admin_client.tenant_id, action="configuration.created", target_id=configuration_id)
    assert f'<a href="/routers/{router_id}">router Branch 2</a>' in html


def test_a_deleted_router_is_named_from_its_events_without_a_link(app, admin_client):
    router_id = add(admin_client, "Gone Router")
    with app.app_context():
        db.session.execute(update(VpnConfiguration).where(VpnConfiguration.router_id == router_id)
                           .values(status=Status.REVOKED))  # as a finished revocation leaves it
        wireguard.delete_router(TEST, db.session.get(Router, router_id))
        db.session.commit()

    html = page_of(admin_client).get_data(as_text=True)

    assert html.count("router Gone Router (deleted)") == 3  # created, its configuration created, deleted
    assert f'href="/routers/{router_id}"' not in html
    chain_holds(app)


def test_support_visitors_see_names_but_no_links_to_owner_pages(app, admin_client, support_user):
    router_id = add(admin_client, "Visited")
    staff = staff_client(app, support_user)
    assert start_visit(app, staff, support_user, admin_client.tenant_id).status_code == 302

    html = page_of(staff).get_data(as_text=True)

    assert f'<a href="/routers/{router_id}">router Visited</a>' in html  # they may read the router page
    assert re.search(r"<td>user admin-[^<]+</td>", html)  # the users page is for the tenant's admins only
    assert "Export" not in html


# Filters ---------------------------------------------------------------------------------------------

@pytest.fixture
def busy_tenant(app, admin_client):
    """A tenant with two routers, an event by another actor, and a few notes."""
    first, second = add(admin_client, "North"), add(admin_client, "South")
    with app.app_context():
        record("test.noted", Actor(user_id=None, label="auditor@example.net"), tenant_id=admin_client.tenant_id,
               target=db.session.get(Router, second), details={"why": "check"})
        db.session.commit()
    return admin_client, first, second


def test_filter_by_actor(app, busy_tenant):
    client, _, second = busy_tenant
    html = page_of(client, actor="auditor@example.net").get_data(as_text=True)
    assert event_ids(html) == tenant_event_ids(app, client.tenant_id, actor_label="auditor@example.net")
    assert len(event_ids(html)) == 1
    assert '<option value="auditor@example.net">' in html  # offered in the list of actors seen


def test_filter_by_action_offers_the_actions_present(app, busy_tenant):
    client, *_ = busy_tenant
    html = page_of(client, action="router.created").get_data(as_text=True)
    assert event_ids(html) == tenant_event_ids(app, client.tenant_id, action="router.created")
    assert len(event_ids(html)) == 2
    assert '<option selected value="router.created">' in html
    assert '<option value="test.noted">' in html and '<option value="hub.created">' not in html


def test_filter_by_target_type_and_by_one_target(app, busy_tenant):
    client, first, second = busy_tenant
    by_type = event_ids(page_of(client, target="router").get_data(as_text=True))
    assert by_type == tenant_event_ids(app, client.tenant_id, target_type="routers")

    html = page_of(client, target=f"router:{second}").get_data(as_text=True)
    with app.app_context():
        configuration_id = db.session.get(Router, second).configurations[0].id
        expected = list(db.session.scalars(select(AuditEvent.id).where(
            AuditEvent.tenant_id == client.tenant_id,
            ((AuditEvent.target_type == "routers") & (AuditEvent.target_id == second))
            | ((AuditEvent.target_type == "vpn_configurations") & (AuditEvent.target_id == configuration_id)))
            .order_by(AuditEvent.id.desc())))
    assert event_ids(html) == expected and len(expected) == 3  # its history: router, configuration, note
    assert f'<option selected value="router:{second}">router South</option>' in html


def test_filter_by_time_range(app, busy_tenant):
    client, *_ = busy_tenant
    everything = tenant_event_ids(app, client.tenant_id)
    now = datetime.now(UTC)
    today = now.strftime("%Y-%m-%d")
    assert event_ids(page_of(client, since=today, until=today).get_data(as_text=True)) == everything
    later = (now + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M")
    assert event_ids(page_of(client, since=later).get_data(as_text=True)) == []
    earlier = (now - timedelta(days=2)).strftime("%Y-%m-%d")
    html = page_of(client, until=earlier).get_data(as_text=True)
    assert event_ids(html) == [] and "No events match these filters." in html


def test_filters_combine(app, busy_tenant):
    client, first, second = busy_tenant
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    html = page_of(client, action="router.created", target=f"router:{first}", since=today,
                   actor=tenant_event_actor(app, client.tenant_id)).get_data(as_text=True)
    assert event_ids(html) == tenant_event_ids(app, client.tenant_id, action="router.created", target_id=first)
    assert len(event_ids(html)) == 1
    assert event_ids(page_of(client, action="router.created", actor="auditor@example.net").get_data(
        as_text=True)) == []


def tenant_event_actor(app, tenant_id: int) -> str:
    with app.app_context():
        return db.session.scalar(select(AuditEvent.actor_label).where(
            AuditEvent.tenant_id == tenant_id, AuditEvent.action == "router.created"))


@pytest.mark.parametrize(("params", "field", "message"), [
    ({"since": "2026-12-03", "until": "2026-12-01"}, "until", "Enter a moment after From."),
    ({"since": "yesterday"}, "since", "Enter a date and time like"),
    ({"until": "2026-13-45T25:61"}, "until", "Enter a date and time like"),
    ({"since": "0001-01-01"}, "since", "Enter a date between 1970 and 8999."),
    ({"until": "9999-12-31"}, "until", "Enter a date between 1970 and 8999."),
    ({"target": "nonsense"}, "target", "Choose what the events are about"),
    ({"target": "router:99999999999999999999"}, "target", "Choose what the events are about"),
    ({"action": "x" * 81}, "action", "Field cannot be longer than 80 characters."),
    ({"actor": "a" * 255}, "actor", "Field cannot be longer than 254 characters."),
])
def test_bad_filters_are_explained_next_to_their_field(admin_client, params, field, message):
    for path in ("/audit", "/audit/export.csv"):
        response = admin_client.get(path, query_string=params)
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        errors = dict(FIELD_ERROR.findall(html))
        assert message in errors[field], errors
        assert f'aria-describedby="{field}-error"' in html or f'{field}-error"' in html
        assert "correct the filters above" in html


def test_odd_cursors_never_fail(admin_client):
    for params in ({"before": "abc"}, {"before": str(2**70)}, {"after": str(2**70)}, {"after": "-5"},
                   {"before": "-1"}):
        assert admin_client.get("/audit", query_string=params).status_code == 200


# Pages that stay put ---------------------------------------------------------------------------------

def test_keyset_pages_neither_repeat_nor_skip_while_events_arrive(app, admin_client):
    tenant_id = admin_client.tenant_id
    record_many(app, tenant_id, 120)
    before = tenant_event_ids(app, tenant_id)
    seen, html = [], page_of(admin_client).get_data(as_text=True)
    assert "Newer" not in html
    pages = 0
    while True:
        ids = event_ids(html)
        seen += ids
        pages += 1
        record_many(app, tenant_id, 3)  # new events while someone pages back
        older = re.search(r'href="(/audit\?before=\d+)" rel="next"', html)
        if older is None:
            break
        html = page_of(admin_client, before=older.group(1).split("=")[1]).get_data(as_text=True)
    assert seen == before and pages == 3

    # And forward again from the oldest page: every newer event, in order, the new ones included.
    forward = []
    while (newer := re.search(r'href="/audit\?after=(\d+)" rel="prev"', html)) is not None:
        html = page_of(admin_client, after=newer.group(1)).get_data(as_text=True)
        forward = event_ids(html) + forward
    oldest_page = before[100:]
    assert forward + oldest_page == tenant_event_ids(app, tenant_id)


def test_filters_survive_paging(app, admin_client):
    tenant_id = admin_client.tenant_id
    record_many(app, tenant_id, 60, action="test.first")
    record_many(app, tenant_id, 10, action="test.second")
    html = page_of(admin_client, action="test.first").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', html).group(1).replace("&amp;", "&")
    assert "action=test.first" in older
    rest = event_ids(admin_client.get(older).get_data(as_text=True))
    assert event_ids(html) + rest == tenant_event_ids(app, tenant_id, action="test.first")


def test_history_of_a_target_does_not_count(app, admin_client):
    """The router page's history (and the dashboard's latest events) read a page, never a count of all."""
    from portal.audit.service import events_for

    router_id = add(admin_client, "Counted")
    statements: list[str] = []
    with app.app_context():
        router = db.session.get(Router, router_id)
        from sqlalchemy import event

        def remember(conn, cursor, statement, *args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", remember)
        try:
            page = events_for(router.tenant_id, targets=[router, *router.configurations], per_page=30)
            latest = events_for(router.tenant_id, per_page=10)
        finally:
            event.remove(db.engine, "before_cursor_execute", remember)
        assert [item.action for item in page.items][-2:] == ["configuration.created", "router.created"]
        assert len(latest.items) <= 10
    assert not any("count(" in statement.lower() for statement in statements)


# Export ----------------------------------------------------------------------------------------------

def test_the_export_is_the_filtered_events_as_csv(app, busy_tenant):
    client, first, second = busy_tenant
    rows = export(client, target=f"router:{second}")
    assert [int(row["id"]) for row in rows] == sorted(
        tenant_event_ids(app, client.tenant_id, target_type="routers", target_id=second)
        + configuration_events(app, second))
    assert list(rows[0]) == ["id", "time", "actor", "impersonator", "action", "target type", "target id",
                             "target name", "details", "ip", "request id"]
    created = next(row for row in rows if row["action"] == "router.created")
    assert created["target type"] == "routers" and created["target id"] == str(second)
    assert created["target name"] == "router South"
    assert json.loads(created["details"]) == {"name": "South"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created["time"])
    assert created["ip"] == "127.0.0.1" and created["request id"]
    configuration = next(row for row in rows if row["action"] == "configuration.created")
    assert configuration["target name"] == "router South"


def configuration_events(app, router_id: int) -> list[int]:
    with app.app_context():
        configuration_id = db.session.get(Router, router_id).configurations[0].id
        return list(db.session.scalars(select(AuditEvent.id).where(
            AuditEvent.target_type == "vpn_configurations", AuditEvent.target_id == configuration_id)))


def test_the_export_cannot_smuggle_a_formula_into_a_spreadsheet(app, admin_client):
    for label in ("=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)"):
        with app.app_context():
            record("test.noted", Actor(user_id=None, label=label), tenant_id=admin_client.tenant_id,
                   details={"note": "=cmd|' /C calc'!A0"})
            db.session.commit()
    rows = export(admin_client, action="test.noted")
    assert [row["actor"] for row in rows] == ["'=HYPERLINK(\"http://evil\")", "'+1+1", "'-2", "'@SUM(A1)"]
    assert all(json.loads(row["details"]) == {"note": "=cmd|' /C calc'!A0"} for row in rows)  # inside JSON: inert


def test_the_export_is_audited(app, admin_client):
    export(admin_client, action="router.created")
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(
            AuditEvent.tenant_id == admin_client.tenant_id, AuditEvent.action == "audit.exported")).one()
        assert event.details == {"filters": {"action": "router.created"}}
        assert event.actor_label.startswith("admin-") and event.ip == "127.0.0.1"
    chain_holds(app)


def test_support_visitors_cannot_export_but_platform_admins_can_from_their_page(app, admin_client, support_user,
                                                                               platform_admin):
    add(admin_client, "Exported")
    staff = staff_client(app, support_user)
    assert start_visit(app, staff, support_user, admin_client.tenant_id).status_code == 302
    refused = staff.get("/audit/export.csv")
    assert refused.status_code == 403 and "cannot do this while looking at a tenant" in refused.get_data(as_text=True)

    admin = staff_client(app, platform_admin)
    path = f"/admin/tenants/{admin_client.tenant_id}/audit"
    html = page_of(admin, path, action="router.created").get_data(as_text=True)
    assert event_ids(html) == tenant_event_ids(app, admin_client.tenant_id, action="router.created")
    assert f'href="{path}/export.csv?action=router.created"' in html
    rows = export(admin, f"{path}/export.csv", action="router.created")
    assert [row["target name"] for row in rows] == ["router Exported"]
    with app.app_context():
        exported = db.session.scalars(select(AuditEvent).where(
            AuditEvent.tenant_id == admin_client.tenant_id, AuditEvent.action == "audit.exported")).one()
        assert exported.actor_label == platform_admin and exported.impersonator_id is None
    assert page_of(admin, path, since="bad").status_code == 422


# Tenants apart ---------------------------------------------------------------------------------------

def test_another_tenants_events_never_appear(app, admin_client, other_tenant_admin):
    other = app.test_client()
    assert login(other, other_tenant_admin[1]).status_code == 302
    theirs = add(other, "Their Router")
    ours = add(admin_client, "Our Router")

    html = page_of(admin_client).get_data(as_text=True)
    assert "Their Router" not in html and "Our Router" in html
    assert set(event_ids(html)) <= set(tenant_event_ids(app, admin_client.tenant_id))

    targeted = page_of(admin_client, target=f"router:{theirs}").get_data(as_text=True)
    assert event_ids(targeted) == [] and "Their Router" not in targeted
    assert export(admin_client, target=f"router:{theirs}") == []
    assert "Their Router" not in json.dumps(export(admin_client))
    assert event_ids(page_of(admin_client, target=f"router:{ours}").get_data(as_text=True))


def test_a_forged_target_of_another_tenant_resolves_to_nothing(app, admin_client, other_tenant_admin):
    with app.app_context():
        theirs = wireguard.add_router(TEST, other_tenant_admin[0], "Secret Name")
        record("test.noted", TEST, tenant_id=admin_client.tenant_id, target=theirs)
        db.session.commit()
    html = page_of(admin_client, action="test.noted").get_data(as_text=True)
    assert "Secret Name" not in html and "router #" in html


def test_tenants_platform_log_is_not_a_route_for_tenant_admins(app, admin_client, other_tenant_admin):
    assert admin_client.get(f"/admin/tenants/{other_tenant_admin[0]}/audit").status_code == 403
    assert admin_client.get(f"/admin/tenants/{other_tenant_admin[0]}/audit/export.csv").status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Tenant)) >= 2
