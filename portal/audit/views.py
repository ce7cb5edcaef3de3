"""The audit log pages: a tenant admin's own, and any tenant's for platform admins."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from portal.audit.service import events_for
from portal.extensions import db
from portal.tenancy.access import current_tenant_id, platform_admin_required, tenant_view_required
from portal.tenancy.impersonation import visits_to
from portal.tenancy.models import Tenant

blueprint = Blueprint("audit", __name__)


@blueprint.route("/audit")
@tenant_view_required
def tenant_events():
    tenant = db.session.get(Tenant, current_tenant_id())
    return _events_page(tenant)


@blueprint.route("/admin/tenants/<int:tenant_id>/audit")
@platform_admin_required
def any_tenant_events(tenant_id: int):
    tenant = db.session.get(Tenant, tenant_id) or abort(404)
    return _events_page(tenant)


def _events_page(tenant: Tenant):
    page = events_for(tenant.id, page=request.args.get("page", 1, type=int))
    return render_template("audit/events.html", tenant=tenant, page=page, visits=visits_to(tenant.id))
