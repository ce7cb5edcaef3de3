"""The audit log pages: a tenant admin's own, and any tenant's for platform admins; each with its filters and
a CSV export of what they select.

The export is for the tenant's own admins (`tenant_owner_required`), and for platform admins from their own
page of the tenant's log: support staff visiting a tenant read its log on screen, but a file of it (its
people's e-mail addresses and IP addresses) leaves only with the people the tenant or the platform answers for,
as downloads of key material do.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Response, abort, render_template, request, stream_with_context, url_for
from flask_login import current_user

from portal.actions import commit
from portal.audit import service
from portal.audit.export import csv_lines
from portal.audit.forms import EventFilterForm
from portal.audit.targets import Viewer, describe, label_of
from portal.extensions import db
from portal.tenancy.access import (
    can_handle_secrets,
    current_tenant_id,
    platform_admin_required,
    request_actor,
    tenant_owner_required,
    tenant_view_required,
)
from portal.tenancy.impersonation import visits_to
from portal.tenancy.models import Role, Tenant

blueprint = Blueprint("audit", __name__)

PER_PAGE = 50
MAX_CURSOR = 2**62  # past any event id, and id ± 1 is still a 64-bit integer


@dataclass(frozen=True)
class LogArea:
    """Whose view of a tenant's log: its endpoints, which target pages open, and whether it exports."""

    tenant: Tenant
    page: str
    export: str
    viewer: Viewer
    may_export: bool
    route_values: dict[str, int]

    def url(self, endpoint: str, **args: str | int) -> str:
        return url_for(endpoint, **self.route_values, **args)


def _tenant_area() -> LogArea:
    viewer = Viewer(tenant_pages=True, owner_pages=can_handle_secrets(),
                    platform_pages=current_user.role == Role.PLATFORM_ADMIN)
    return LogArea(_tenant(current_tenant_id()), "audit.tenant_events", "audit.tenant_export", viewer,
                   can_handle_secrets(), {})


def _platform_area(tenant_id: int) -> LogArea:
    viewer = Viewer(tenant_pages=current_tenant_id() == tenant_id, platform_pages=True)
    return LogArea(_tenant(tenant_id), "audit.any_tenant_events", "audit.any_tenant_export", viewer, True,
                   {"tenant_id": tenant_id})


@blueprint.route("/audit")
@tenant_view_required
def tenant_events():
    return _events_page(_tenant_area())


@blueprint.route("/audit/export.csv")
@tenant_owner_required
def tenant_export():
    return _export(_tenant_area())


@blueprint.route("/admin/tenants/<int:tenant_id>/audit")
@platform_admin_required
def any_tenant_events(tenant_id: int):
    return _events_page(_platform_area(tenant_id))


@blueprint.route("/admin/tenants/<int:tenant_id>/audit/export.csv")
@platform_admin_required
def any_tenant_export(tenant_id: int):
    return _export(_platform_area(tenant_id))


def _tenant(tenant_id: int | None) -> Tenant:
    return db.session.get(Tenant, tenant_id) or abort(404)


def _filter_form(tenant: Tenant, actions: list[str]) -> EventFilterForm:
    form = EventFilterForm(request.args, actions)
    kind = form.target_kind
    if kind is not None and kind[1] is not None:
        form.target.choices.append((form.target.data, label_of(kind[0], kind[1], tenant.id)))
    return form


def _events_page(area: LogArea, refused: EventFilterForm | None = None):
    """The page; with `refused`, a form whose filters did not validate: their errors, and no events."""
    tenant = area.tenant
    seen = service.seen(tenant.id)
    form = refused or _filter_form(tenant, seen["actions"])
    valid = refused is None and form.validate()
    page = None
    if valid:
        page = service.events_for(tenant.id, filters=form.event_filter(tenant.id), per_page=PER_PAGE,
                                  before=_cursor("before"), after=_cursor("after"))
    html = render_template("audit/events.html", tenant=tenant, area=area, form=form, page=page,
                           targets=describe(page.items, tenant.id, area.viewer) if page else {},
                           actors=seen["actors"], visits=visits_to(tenant.id),
                           filters=form.query_args())
    return html, 200 if valid else 422


def _cursor(name: str) -> int | None:
    """An event id from the query string; a malformed one is ignored, a huge one is the newest end."""
    value = request.args.get(name, type=int)
    return None if value is None else min(max(value, 0), MAX_CURSOR)


def _export(area: LogArea):
    tenant = area.tenant
    form = _filter_form(tenant, service.seen(tenant.id)["actions"])
    if not form.validate():
        return _events_page(area, form)
    filters = form.event_filter(tenant.id)
    commit(lambda: service.record("audit.exported", request_actor(), tenant_id=tenant.id,
                                  details={"filters": form.query_args()}))
    return Response(stream_with_context(csv_lines(tenant.id, filters)), content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="audit-{tenant.id}.csv"',
                             "Cache-Control": "no-store"})
