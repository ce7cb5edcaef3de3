"""The tenant dashboard page and its panels, each also served alone for live re-fetches.

A panel served alone builds only its own figures: a live hint about traffic re-fetches the fleet panel, not
the audit log or the subnet.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from flask import Blueprint, make_response, render_template

from portal.audit.service import events_for
from portal.audit.targets import Viewer, describe
from portal.dashboard import service
from portal.htmx import wants_fragment
from portal.ipam.service import usage
from portal.tenancy.access import can_handle_secrets, current_tenant_id, tenant_view_required
from portal.types import utcnow

blueprint = Blueprint("dashboard", __name__)
RECENT_EVENTS = 10


def _subnet(tenant_id: int, now: datetime) -> dict:
    return {"usage": usage(tenant_id), "live_configurations": service.live_configurations(tenant_id)}


def _fleet(tenant_id: int, now: datetime) -> dict:
    return {"fleet": service.fleet(tenant_id, now)}


def _online(tenant_id: int, now: datetime) -> dict:
    return {"online_chart": service.online_history(tenant_id, now)}


def _events(tenant_id: int, now: datetime) -> dict:
    """The newest events (read through an index, never counted) and their targets, named and linked."""
    events = events_for(tenant_id, per_page=RECENT_EVENTS).items
    viewer = Viewer(tenant_pages=True, owner_pages=can_handle_secrets())
    return {"events": events, "targets": describe(events, tenant_id, viewer)}


# Each panel: its fragment, and what it shows of a tenant at a time.
PANELS: dict[str, tuple[str, Callable[[int, datetime], dict]]] = {
    "subnet": ("dashboard/_subnet.html", _subnet),
    "fleet": ("dashboard/_fleet.html", _fleet),
    "online": ("dashboard/_online.html", _online),
    "events": ("dashboard/_events.html", _events),
}


def _figures(*panels: str) -> dict:
    tenant_id, now = current_tenant_id(), utcnow()
    figures = {"now": now}
    for panel in panels:
        figures.update(PANELS[panel][1](tenant_id, now))
    return figures


@blueprint.route("/dashboard")
@tenant_view_required
def dashboard():
    return render_template("dashboard/dashboard.html", **_figures(*PANELS))


def _panel(panel: str):
    """The panel alone for htmx; the whole page (every panel) otherwise."""
    if wants_fragment():
        response = make_response(render_template(PANELS[panel][0], **_figures(panel)))
    else:
        response = make_response(render_template("dashboard/dashboard.html", **_figures(*PANELS)))
    response.vary.add("HX-Request")
    return response


@blueprint.route("/dashboard/subnet")
@tenant_view_required
def subnet_panel():
    return _panel("subnet")


@blueprint.route("/dashboard/fleet")
@tenant_view_required
def fleet_panel():
    return _panel("fleet")


@blueprint.route("/dashboard/online")
@tenant_view_required
def online_panel():
    return _panel("online")


@blueprint.route("/dashboard/events")
@tenant_view_required
def events_panel():
    return _panel("events")
