"""The tenant dashboard page and its panels, each also served alone for live re-fetches."""

from __future__ import annotations

from flask import Blueprint, render_template

from portal.audit.service import events_for
from portal.dashboard import service
from portal.htmx import page_or_fragment
from portal.ipam.service import usage
from portal.tenancy.access import current_tenant_id, tenant_view_required
from portal.types import utcnow

blueprint = Blueprint("dashboard", __name__)
RECENT_EVENTS = 10


def _panels() -> dict:
    tenant_id, now = current_tenant_id(), utcnow()
    return {"usage": usage(tenant_id), "fleet": service.fleet(tenant_id, now),
            "events": events_for(tenant_id, per_page=RECENT_EVENTS).items, "now": now}


@blueprint.route("/dashboard")
@tenant_view_required
def dashboard():
    return render_template("dashboard/dashboard.html", **_panels())


@blueprint.route("/dashboard/fleet")
@tenant_view_required
def fleet_panel():
    return page_or_fragment("dashboard/dashboard.html", "dashboard/_fleet.html", **_panels())


@blueprint.route("/dashboard/events")
@tenant_view_required
def events_panel():
    return page_or_fragment("dashboard/dashboard.html", "dashboard/_events.html", **_panels())
