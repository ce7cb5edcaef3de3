"""The dashboard: routers online over the last day from samples a worker stores per tenant, subnet usage, and
panels that each build only their own figures when fetched alone."""

from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import timedelta
from html import unescape

from sqlalchemy import event, select

from portal.dashboard import jobs as dashboard_jobs
from portal.dashboard.models import FleetSample
from portal.extensions import db
from portal.types import utcnow
from portal.wireguard.models import VpnConfiguration
from tests.conftest import add_router, login, post, run_worker
from tests.wireguard.test_charts import router_on_managed_hub

FRAGMENT = {"HX-Request": "true"}
FLEET_TABLES = ("routers", "vpn_configurations", "vpn_clients")  # what grows with the tenant


def panel(client, name: str) -> str:
    return unescape(client.get(f"/dashboard/{name}", headers=FRAGMENT).get_data(as_text=True))


def worker_round(app) -> None:
    """The worker's periodic fleet sampling, run by a real worker."""
    with app.app_context():
        dashboard_jobs.sample_fleets.enqueue()
    run_worker(app)


def samples_of(app, tenant_id: int) -> list[tuple[int, int]]:
    with app.app_context():
        return db.session.execute(select(FleetSample.online, FleetSample.monitored)
                                  .where(FleetSample.tenant_id == tenant_id).order_by(FleetSample.id)).all()


def test_a_worker_round_samples_each_tenant_and_the_dashboard_charts_it(app, admin_client, other_tenant_admin):
    neighbour = app.test_client()
    login(neighbour, other_tenant_admin[1])
    add_router(neighbour, "On an unmanaged hub")
    with router_on_managed_hub(app, admin_client, "Seen online") as (_, configuration_id):
        assert "No samples yet" in panel(admin_client, "online")
        with app.app_context():
            db.session.get(VpnConfiguration, configuration_id).last_handshake_at = utcnow()  # as monitoring stores
            db.session.commit()
        worker_round(app)
        online = panel(admin_client, "online")
    assert samples_of(app, admin_client.tenant_id) == [(1, 1)]
    assert samples_of(app, other_tenant_admin[0]) == [(0, 0)]
    assert online.lstrip().startswith('<section id="online-history"') and 'data-live="monitor"' in online
    assert "1 of 1 monitored routers online at" in online
    assert re.search(r"\d\d:\d\d–\d\d:\d\d UTC — 1 online of 1 monitored</title>", online)
    assert [label for label in re.findall(r'<text class="y-tick"[^>]*>([^<]+)</text>', online)] == ["0", "1"]
    assert "online</li>" in online and "monitored</li>" in online and "times in UTC" in online
    assert "is active on a hub the portal monitors" in panel(neighbour, "online")


def test_fleet_samples_thin_as_they_age_and_go_after_the_retention(app, tenant_admin):
    now = utcnow()
    quarter = now - timedelta(minutes=70)  # thinning looks at the half hour that just aged past an hour
    quarter -= timedelta(minutes=quarter.minute % 15, seconds=quarter.second, microseconds=quarter.microsecond)
    with app.app_context():
        db.session.add_all(FleetSample(tenant_id=tenant_admin[0], taken_at=taken_at, online=1, monitored=2)
                           for taken_at in (quarter + timedelta(minutes=1), quarter + timedelta(minutes=2),
                                            quarter + timedelta(minutes=3), now - timedelta(days=8)))
        db.session.commit()
    worker_round(app)
    assert samples_of(app, tenant_admin[0]) == [(1, 2)]  # one for that quarter hour, none from last week


def test_the_subnet_panel_counts_addresses_and_live_configurations(admin_client):
    assert "allocated with your first router" in panel(admin_client, "subnet")
    add_router(admin_client, "Holds an address")
    subnet = panel(admin_client, "subnet")
    assert subnet.lstrip().startswith('<section id="subnet-usage"') and 'data-live="usage status"' in subnet
    assert re.search(r"<strong>2</strong> of <strong>\d+</strong> addresses used", subnet)  # the hub and the router
    assert 'Live configurations (any status but revoked): <strong class="live-configurations">1</strong>' in subnet
    assert '<meter min="0"' in subnet


def test_the_events_panel_shows_the_last_ten(admin_client):
    for number in range(6):
        add_router(admin_client, f"Eventful {number}")
    events = panel(admin_client, "events")
    assert events.count("<tr>") == 11  # the header and ten events
    assert "Full audit log" in events


@contextmanager
def statements(app):
    """The SQL the app sends while the block runs."""
    seen: list[str] = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", remember)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", remember)


def test_a_panel_fetched_alone_builds_only_its_own_figures(app, admin_client):
    add_router(admin_client, "Figures")
    # a table only that panel reads
    tables = {"subnet": "tenant_subnets", "fleet": "vpn_clients", "online": "fleet_samples", "events": "audit_events"}
    for name, own_table in tables.items():
        with statements(app) as sent:
            body = panel(admin_client, name)
        assert "<html" not in body and "data-live-src=" in body, name
        touched = {table for table in tables.values() if any(f"FROM {table}" in s or f"JOIN {table}" in s
                                                              for s in sent)}
        assert touched == {own_table}, name
    page = admin_client.get("/dashboard").get_data(as_text=True)
    for root in ('id="subnet-usage"', 'id="fleet-summary"', 'id="online-history"', 'id="recent-events"'):
        assert root in page
    assert 'id="online-history"' in admin_client.get("/dashboard/online").get_data(as_text=True)  # a whole page


def counts_over_the_fleet(sent: list[str]) -> list[str]:
    return [s for s in sent if "count(" in s and any(f"FROM {table}" in s for table in FLEET_TABLES)]


def fleet_figures(client) -> tuple[str, str]:
    """(routers, live configurations) as the fleet and subnet panels show them."""
    routers = re.search(r'<strong class="router-count">(\d+)</strong>', panel(client, "fleet")).group(1)
    live = re.search(r'<strong class="live-configurations">(\d+)</strong>', panel(client, "subnet")).group(1)
    return routers, live


def test_the_counts_are_kept_until_the_tenant_changes_and_right_at_once_after(app, admin_client):
    from tests.wireguard.test_router_management import revoked_router

    add_router(admin_client, "Counted")
    assert fleet_figures(admin_client) == ("1", "1")
    with statements(app) as sent:
        assert fleet_figures(admin_client) == ("1", "1")
    assert not counts_over_the_fleet(sent)  # nothing changed: the counts are reused, not read again
    add_router(admin_client, "Counted too")
    assert fleet_figures(admin_client) == ("2", "2")  # the add's hint retired the kept counts
    revoked_router(app, admin_client, "Revoked")
    assert fleet_figures(admin_client) == ("3", "2")
    deleted = revoked_router(app, admin_client, "Deleted")
    assert fleet_figures(admin_client) == ("4", "2")
    assert "Page 1 of 1 (4 routers)" in admin_client.get("/routers").get_data(as_text=True)  # the list's pager too
    assert post(admin_client, f"/routers/{deleted}/delete").status_code == 303
    assert fleet_figures(admin_client) == ("3", "2")
    assert "Page 1 of 1 (3 routers)" in admin_client.get("/routers").get_data(as_text=True)


def test_the_counts_are_read_every_time_when_redis_is_down(app, admin_client, monkeypatch):
    add_router(admin_client, "Counted without Redis")
    monkeypatch.setitem(app.config, "PORTAL_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.delitem(app.extensions, "portal.redis", raising=False)
    for _ in range(2):
        with statements(app) as sent:
            assert fleet_figures(admin_client) == ("1", "1")
        assert counts_over_the_fleet(sent)
