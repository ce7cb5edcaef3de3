"""Live hints coalesced per room and panel: a burst costs a few deliveries, the last state always arrives, and
different panels or rooms never stand in for each other. Real Redis, a real Socket.IO server, python-socketio
clients, and emitters in other processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from portal import live
from portal.extensions import db
from portal.live.coalesce import WINDOW_MS
from portal.live.emit import tenant_room
from tests.conftest import ROOT, create_tenant_admin, served
from tests.web.test_live import Browser

WINDOW = WINDOW_MS / 1000


@pytest.fixture
def connect(app):
    """connect(count): `count` connected browsers of one fresh tenant's admin, and the tenant's id."""
    opened: list[Browser] = []

    with served(app) as base_url:
        def open_browsers(count: int = 1) -> tuple[int, list[Browser]]:
            tenant_id, email = create_tenant_admin(app)
            browsers = [Browser(base_url, email, app) for _ in range(count)]
            opened.extend(browsers)
            for browser in browsers:
                browser.connect()
            return tenant_id, browsers

        yield open_browsers
        for browser in opened:
            browser.close()


def emit(app, tenant_id: int, event: str = "status", **payload) -> None:
    with app.app_context():
        assert live.emit_now(event, tenant_room(tenant_id), payload)


def settled(browser: Browser) -> list[tuple[str, dict]]:
    """What else arrives once every window has ended."""
    time.sleep(3 * WINDOW)
    return browser.received()


def test_a_burst_of_400_changes_arrives_as_a_few_deliveries_ending_with_the_last_state(app, connect):
    tenant_id, browsers = connect(3)
    started = time.monotonic()
    with app.app_context():
        for index in range(400):  # as jobs do: one commit per change
            live.status_changed("configuration", index, tenant_id, "active" if index == 399 else "provisioning",
                                router_id=1000 + index)
            db.session.commit()
    windows = (time.monotonic() - started) / WINDOW

    for browser in browsers:
        received = browser.events_until(lambda event, data: data["id"] == 399)
        assert received[0][1]["id"] == 0  # the first change went out at once
        assert len(received) <= windows + 2, (len(received), windows)  # one per window, and the last one
        final = received[-1][1]
        assert (final["status"], final["router_id"], final["mixed"]) == ("active", 1399, ["id", "router_id"])
        assert settled(browser) == []


def test_the_last_hint_of_a_window_arrives_when_it_ends_without_another_hint_to_push_it(app, connect):
    tenant_id, [browser] = connect()
    emit(app, tenant_id, kind="configuration", id=7, router_id=3, status="provisioning")
    emit(app, tenant_id, kind="configuration", id=7, router_id=3, status="active")
    first = browser.next_event()
    first_at = time.monotonic()
    last = browser.next_event()
    waited = time.monotonic() - first_at
    assert first[1]["status"] == "provisioning" and last[1]["status"] == "active"
    assert "mixed" not in last[1]  # both were about one row: a panel matching it needs no wildcard
    assert WINDOW / 2 < waited < 10 * WINDOW
    assert settled(browser) == []


def test_different_panels_and_rooms_are_never_merged(app, connect):
    tenant_id, [browser] = connect()
    other_tenant_id, [other] = connect()
    hints = [("status", {"kind": "configuration", "id": 1, "router_id": 1, "status": "active"}),
             ("status", {"kind": "client", "id": 2, "status": "revoked"}),
             ("monitor", {"kind": "configuration", "id": 1, "router_id": 1, "online": True}),
             ("progress", {"kind": "configuration", "id": 1, "router_id": 1, "step": "x.started"}),
             ("usage", {}),
             ("audit", {})]

    def strip(received):
        return sorted((event, sorted((k, v) for k, v in data.items() if k != "at")) for event, data in received)

    for round_ in ("leading", "trailing"):  # the first of each key goes at once; the second waits for its window
        for event, payload in hints:
            emit(app, tenant_id, event, **payload)
        emit(app, other_tenant_id, "status", kind="configuration", id=9, router_id=9, status=round_)
        received = [browser.next_event() for _ in hints]
        assert strip(received) == strip(hints), round_
        assert other.next_event()[1]["status"] == round_
    assert settled(browser) == [] and settled(other) == []


def test_hints_about_several_rows_name_the_id_fields_that_differed(app, connect):
    tenant_id, [browser] = connect()
    emit(app, tenant_id, kind="configuration", id=1, router_id=1, status="active")  # at once
    emit(app, tenant_id, kind="configuration", id=2, router_id=2, status="pending")
    emit(app, tenant_id, kind="configuration", id=3, router_id=2, status="active")
    assert browser.next_event()[1]["id"] == 1
    merged = browser.next_event()[1]
    # The router 2 panel matches it by value; any other router's panel and the client panel by `mixed`.
    assert {key: merged[key] for key in ("id", "router_id", "status", "mixed")} == {
        "id": 3, "router_id": 2, "status": "active", "mixed": ["id"]}


EMITTER = """
import sys, time
from portal import create_app
from portal.live import emit_now, tenant_room

tenant_id, first, start_at = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
app = create_app()
with app.app_context():
    time.sleep(max(0.0, start_at - time.time()))
    for index in range(first, first + 200):
        emit_now("monitor", tenant_room(tenant_id), {"kind": "configuration", "id": index, "online": True})
"""


def test_workers_in_other_processes_share_the_window_and_their_last_hint_arrives_after_they_exit(app, connect):
    tenant_id, [browser] = connect()
    start_at = time.time() + 3  # both burst at once, once started
    emitters = [subprocess.Popen([sys.executable, "-c", EMITTER, str(tenant_id), str(first), str(start_at)],
                                 cwd=ROOT) for first in (0, 1000)]
    started = time.monotonic()
    assert [emitter.wait(timeout=60) for emitter in emitters] == [0, 0]
    windows = (time.monotonic() - started) / WINDOW  # an upper bound: it includes starting Python twice

    received = [data for _, data in browser.events_until(lambda event, data: data["id"] in (199, 1199))]
    received += [data for _, data in settled(browser)]
    assert len(received) <= windows + 4 and len(received) < 100  # at most one per window: not 400
    assert received[0]["id"] in (0, 1000)
    assert received[-1]["id"] in (199, 1199)  # the last hint of whichever process sent last
