"""WireGuard hubs, and tenants' router-to-router setting, for platform admins."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from portal.actions import save_form
from portal.extensions import db
from portal.forms import ActionForm
from portal.ssh import fingerprint
from portal.tenancy.access import can_handle_secrets, platform_admin_required, request_actor
from portal.tenancy.models import Tenant
from portal.wireguard import hubs as hub_service
from portal.wireguard import jobs, manual, service
from portal.wireguard.forms import HubForm
from portal.wireguard.hubs import HubSettings
from portal.wireguard.models import Hub, VpnConfiguration

blueprint = Blueprint("hubs", __name__)


@blueprint.app_template_filter("host_key_fingerprint")
def host_key_fingerprint(host_key: str | None) -> str:
    try:
        return fingerprint(host_key) if host_key else "-"
    except ValueError:
        return "(unreadable key)"


@blueprint.app_template_global()
def hub_commands(configuration: VpnConfiguration) -> manual.HubCommands | None:
    """The router page's commands for a hub the portal does not manage; the preshared key in them only for the
    tenant's own admins."""
    return manual.hub_commands(configuration, reveal_key=can_handle_secrets())


@blueprint.route("/admin/hubs")
@platform_admin_required
def hubs():
    listed = service.hubs_with_tenant_counts()
    return render_template("wireguard/hubs.html", hubs=listed,
                           bootstraps=hub_service.last_bootstraps([hub.id for hub, _ in listed]), form=ActionForm())


@blueprint.post("/admin/hubs/<int:hub_id>/bootstrap")
@platform_admin_required
def bootstrap_hub(hub_id: int):
    hub = db.get_or_404(Hub, hub_id)
    if ActionForm().validate_on_submit():
        if not hub.managed:
            flash(f"Hub {hub.name} is not managed by the portal; there is nothing to bootstrap.", "error")
        else:
            jobs.bootstrap_hub.wake(hub.id)
            flash(f"Bootstrap of {hub.name} queued; this page shows its outcome once a worker has run it.")
    return redirect(url_for("hubs.hubs"), 303)


@blueprint.post("/admin/tenants/<int:tenant_id>/router-to-router")
@platform_admin_required
def set_router_to_router(tenant_id: int):
    if ActionForm().validate_on_submit():
        allowed = request.form.get("allowed") == "yes"
        hub_ids = hub_service.set_router_to_router(request_actor(), db.get_or_404(Tenant, tenant_id), allowed)
        db.session.commit()
        for hub_id in hub_ids:
            jobs.bootstrap_hub.wake(hub_id)
        flash("Routers of this tenant " + ("may now reach each other" if allowed else "no longer reach each other")
              + (" once the hub firewall is updated (queued)." if hub_ids else "."))
    return redirect(url_for("tenancy.tenants"), 303)


@blueprint.route("/admin/tenants/<int:tenant_id>/routers")
@platform_admin_required
def tenant_routers(tenant_id: int):
    """A tenant's routers, read-only: what platform admins may know without a visit (no keys, no downloads)."""
    tenant = db.get_or_404(Tenant, tenant_id)
    page = service.routers_page(tenant.id, page=request.args.get("page", 1, type=int),
                                per_page=current_app.config["PORTAL_PAGE_SIZE"])
    return render_template("tenancy/tenant_routers.html", tenant=tenant, page=page)


@blueprint.route("/admin/hubs/new", methods=["GET", "POST"], defaults={"hub_id": None})
@blueprint.route("/admin/hubs/<int:hub_id>/edit", methods=["GET", "POST"])
@platform_admin_required
def edit_hub(hub_id: int | None):
    hub = db.get_or_404(Hub, hub_id) if hub_id is not None else None
    form = HubForm.for_host(hub, request.method)
    if form.validate_on_submit():
        settings = form.settings(HubSettings)
        saved = save_form(form, lambda: hub_service.save_hub(request_actor(), settings, hub))
        if saved is not None:
            flash(f"Hub {saved.name} saved." + (" Run `flask hub bootstrap` to prepare it." if saved.managed else ""))
            return redirect(url_for("hubs.hubs"), 303)
    return render_template("wireguard/hub_form.html", form=form, hub=hub), 422 if form.errors else 200
