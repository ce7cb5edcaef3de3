"""Routers, their configurations and downloads, for tenant admins (hubs are in `admin_views`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy.orm import selectinload

from portal.actions import act, save_form
from portal.audit.service import events_for
from portal.downloads import WIREGUARD_KINDS, NotDownloadable, wireguard_file
from portal.extensions import db
from portal.forms import ActionForm
from portal.htmx import page_or_fragment, redirect_after_post, wants_fragment
from portal.ipam.service import usage
from portal.pagination import MAX_PAGE
from portal.tenancy.access import (
    current_tenant_id,
    request_actor,
    tenant_change_required,
    tenant_owner_required,
    tenant_view_required,
)
from portal.tenancy.scope import get_owned_or_404
from portal.types import utcnow
from portal.wireguard import jobs, service
from portal.wireguard.charts import Chart, chart, traffic_note
from portal.wireguard.forms import RouterForm
from portal.wireguard.models import Router, VpnConfiguration

blueprint = Blueprint("wireguard", __name__)

CHART_SPANS = (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1)))


@dataclass(frozen=True)
class Listing:
    """What the routers list shows: search, sort, filters and page, as read from (and written back to) its URL."""

    search: str = ""
    sort: str = "name"
    descending: bool = False
    status: str | None = None
    hub_id: int | None = None
    page: int = 1

    def args(self, **changes) -> dict:
        """The URL arguments of this listing with `changes` (None drops one), for links that keep the rest."""
        values = {"q": self.search or None, "sort": self.sort, "dir": "desc" if self.descending else "asc",
                  "status": self.status, "hub": self.hub_id, "page": self.page if self.page > 1 else None,
                  **changes}
        return {key: value for key, value in values.items() if value is not None}

    @property
    def filtered(self) -> bool:
        return bool(self.search or self.status or self.hub_id)


def _listing(hubs: list[service.HubChoice]) -> Listing:
    args = request.args
    hub_id = args.get("hub", type=int)
    return Listing(search=args.get("q", "").strip()[:64],
                   sort=args["sort"] if args.get("sort") in service.SORTS else "name",
                   descending=args.get("dir") == "desc",
                   status=args["status"] if args.get("status") in service.STATUS_FILTERS else None,
                   hub_id=hub_id if hub_id in {hub.id for hub in hubs} else None,
                   page=min(max(args.get("page", 1, type=int), 1), MAX_PAGE))


@blueprint.route("/routers")
@tenant_view_required
def routers():
    tenant_id = current_tenant_id()
    hubs = service.hubs_in_use(tenant_id)
    listing = _listing(hubs)
    page = service.routers_page(tenant_id, search=listing.search, sort=listing.sort,
                                descending=listing.descending, status=listing.status, hub_id=listing.hub_id,
                                page=listing.page, per_page=current_app.config["PORTAL_PAGE_SIZE"])
    return page_or_fragment("wireguard/routers.html", "wireguard/_router_table.html", page=page, listing=listing,
                            hubs=hubs, statuses=service.STATUS_FILTERS, bulk_max=service.BULK_MAX,
                            usage=usage(tenant_id), now=utcnow())


@blueprint.route("/routers/subnet")
@tenant_view_required
def subnet():
    return page_or_fragment("wireguard/subnet.html", "wireguard/_subnet.html", usage=usage(current_tenant_id()))


@blueprint.route("/routers/new", methods=["GET", "POST"])
@tenant_change_required
def new_router():
    form = RouterForm()
    if form.validate_on_submit():
        added = save_form(form, lambda: _added(service.add_router(request_actor(), current_tenant_id(),
                                                                  form.name.data, form.note.data or "")),
                          lambda ids: jobs.sync_hub.wake(ids[1]), near="name")
        if added is not None:
            flash(f"Router {form.name.data} added.")  # its panel says, live, how provisioning goes
            return redirect_after_post(url_for("wireguard.router", router_id=added[0]))
    return _router_form("wireguard/new_router.html", form, action=url_for("wireguard.new_router"),
                        submit="Add router", cancel=url_for("wireguard.routers"))


def _added(router: Router) -> tuple[int, int]:
    """The new router's id and its hub's, read before the commit expires them."""
    return router.id, router.current_configuration.hub_id


@blueprint.route("/routers/<int:router_id>/edit", methods=["GET", "POST"])
@tenant_change_required
def edit_router(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    form = RouterForm(obj=router)
    page = url_for("wireguard.router", router_id=router_id)
    if form.validate_on_submit():
        saved = save_form(form, lambda: service.update_router(request_actor(), router, name=form.name.data,
                                                               note=form.note.data or "").name, near="name")
        if saved is not None:
            flash(f"Router {saved} saved.")
            return redirect_after_post(page)
    return _router_form("wireguard/edit_router.html", form, router=router, submit="Save",
                        action=url_for("wireguard.edit_router", router_id=router_id), cancel=page)


def _router_form(page: str, form: RouterForm, **context):
    """The add or edit page, or for htmx the form alone; 422 with the errors beside their fields."""
    return page_or_fragment(page, "wireguard/_router_form.html", form=form, **context), 422 if form.errors else 200


@blueprint.route("/routers/<int:router_id>/delete", methods=["GET", "POST"])
@tenant_change_required
def delete_router(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    name, form = router.name, ActionForm()
    if form.validate_on_submit():
        if act(lambda: service.delete_router(request_actor(), router), lambda _: None, f"Router {name} deleted."):
            return redirect(url_for("wireguard.routers"), 303)
        return redirect(url_for("wireguard.delete_router", router_id=router_id), 303)
    return render_template("wireguard/delete_router.html", router=router, form=form,
                           configuration=router.current_configuration)


# A router's page and panels read its configurations and their hubs in one statement after the router's.
WITH_CONFIGURATIONS = (selectinload(Router.configurations).joinedload(VpnConfiguration.hub),)


@blueprint.route("/routers/<int:router_id>")
@tenant_view_required
def router(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id(), WITH_CONFIGURATIONS)
    return render_template("wireguard/router.html", **_router_context(router, ROUTER_PAGE_PARTS))


# The router page's live panels, each also served alone (Socket.IO hints make the page fetch them again), and
# what each needs beyond the router and its configuration: a panel computes only what it shows.
ROUTER_PANELS = {"configuration": "wireguard/_configuration.html", "steps": "wireguard/_steps.html",
                 "traffic": "wireguard/_traffic.html"}
PANEL_PARTS = {"configuration": (), "steps": ("history",), "traffic": ("charts",)}
ROUTER_PAGE_PARTS = ("history", "charts")


@blueprint.route("/routers/<int:router_id>/<any(configuration, steps, traffic):panel>")
@tenant_view_required
def router_panel(router_id: int, panel: str):
    router = get_owned_or_404(Router, router_id, current_tenant_id(), WITH_CONFIGURATIONS)
    parts = PANEL_PARTS[panel] if wants_fragment() else ROUTER_PAGE_PARTS
    return page_or_fragment("wireguard/router.html", ROUTER_PANELS[panel], **_router_context(router, parts))


def _router_context(router: Router, parts: tuple[str, ...]) -> dict:
    configuration, now = router.current_configuration, utcnow()
    context = {"router": router, "configuration": configuration, "action_form": ActionForm(), "now": now}
    if "history" in parts:
        context["history"] = _history(router)
    if "charts" in parts:
        context["charts"] = charts = _charts(configuration, now)
        context["traffic_note"] = traffic_note(configuration, charts, now,
                                               current_app.config["PORTAL_TRAFFIC_SAMPLE_INTERVAL"],
                                               current_app.config["PORTAL_MONITOR_INTERVAL"])
    return context


def _history(router: Router):
    return events_for(router.tenant_id, targets=[router, *router.configurations], per_page=30).items


def _charts(configuration: VpnConfiguration | None, now) -> list[Chart]:
    if configuration is None or not configuration.hub.managed:
        return []
    samples = service.traffic_samples(configuration.id, now - CHART_SPANS[-1][1])
    return [chart(label, samples, now, span) for label, span in CHART_SPANS]


@blueprint.route("/routers/<int:router_id>/revoke", methods=["GET", "POST"])
@tenant_change_required
def revoke(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    configuration = router.current_configuration
    form = ActionForm()
    if configuration is None or not configuration.is_live:
        flash("This router has no configuration to revoke.")
        return redirect(url_for("wireguard.router", router_id=router.id), 303)
    if form.validate_on_submit():
        hub_id = configuration.hub_id  # read before the commit expires it
        act(lambda: service.request_revocation(request_actor(), configuration), lambda _: jobs.sync_hub.wake(hub_id),
            f"Revoking the configuration of {router.name}. This cannot be undone.")
        return redirect(url_for("wireguard.router", router_id=router_id), 303)
    return render_template("wireguard/revoke.html", router=router, configuration=configuration, form=form)


@blueprint.route("/routers/<int:router_id>/configurations", methods=["POST"])
@tenant_change_required
def new_configuration(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.add_configuration(request_actor(), router).hub_id, jobs.sync_hub.wake,
            "New configuration created with new keys.")
    return redirect(url_for("wireguard.router", router_id=router_id), 303)


@blueprint.route("/configurations/<int:configuration_id>/retry", methods=["POST"])
@tenant_change_required
def retry(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    router_id, hub_id = configuration.router_id, configuration.hub_id  # read before the commit expires them
    if ActionForm().validate_on_submit():
        act(lambda: service.request_retry(request_actor(), configuration), lambda _: jobs.sync_hub.wake(hub_id),
            "Provisioning again.")
    return redirect(url_for("wireguard.router", router_id=router_id), 303)


@blueprint.route("/configurations/<int:configuration_id>/rotate", methods=["GET", "POST"])
@tenant_change_required
def rotate(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    router_id, hub_id = configuration.router_id, configuration.hub_id  # read before the commit expires them
    if request.method == "GET":  # what stops working, and when, before anyone presses the button
        return render_template("wireguard/rotate.html", configuration=configuration, router=configuration.router,
                               form=ActionForm())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_rotation(request_actor(), configuration), lambda _: jobs.sync_hub.wake(hub_id),
            lambda over_api: ROTATING_OVER_API if over_api else ROTATED_ON_HUB)
    return redirect(url_for("wireguard.router", router_id=router_id), 303)


ROTATED_ON_HUB = ("New keys generated. The old ones stop working once the hub holds the new ones; the panel below "
                  "says when to download.")
ROTATING_OVER_API = ("New keys generated: the portal puts them on the router over its API and keeps the old key "
                     "working until the new one has a handshake; if none comes, the router goes back to the old key.")


@blueprint.route("/configurations/<int:configuration_id>/download.<kind>")
@tenant_owner_required
def download(configuration_id: int, kind: str):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id(), service.PEER_PARTS)
    if kind not in WIREGUARD_KINDS:
        abort(404)
    try:
        file = wireguard_file(request_actor(), configuration, kind)
    except NotDownloadable as error:
        flash(str(error), "error")
        return redirect(url_for("wireguard.router", router_id=configuration.router_id), 303)
    db.session.commit()
    return file.response()




@blueprint.route("/configurations/<int:configuration_id>/qr")
@tenant_owner_required
def qr(configuration_id: int):
    """The wg-quick file as a QR code for the WireGuard phone apps. It holds the private key: shown on a click,
    never with the page, not cached, to the tenant's own admins, and audited as a download of format `qr`."""
    from portal.qr import qr_svg
    from portal.wireguard.render import interface_name, render_conf

    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id(), service.PEER_PARTS)
    if not configuration.active:
        abort(409, description="Only an active configuration has a QR code.")
    router = configuration.router
    svg = qr_svg(render_conf(service.peer_config(configuration)), "QR code of the WireGuard configuration",
                 error="l", scale=4)
    context = {"router": router, "configuration": configuration, "qr": svg,
               "tunnel": interface_name(router.name, configuration.id)}
    service.record_download(request_actor(), configuration, "qr")
    response = page_or_fragment("wireguard/qr.html", "wireguard/_qr.html", **context)  # before the commit expires
    db.session.commit()
    response.headers["Cache-Control"] = "no-store"
    return response
