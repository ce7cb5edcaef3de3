"""Routers, their configurations and downloads, for tenant admins."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from portal.actions import act, save_form
from portal.audit.service import events_for
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ActionForm
from portal.htmx import page_or_fragment, redirect_after_post
from portal.ipam.service import usage
from portal.ssh import fingerprint
from portal.tenancy.access import current_tenant_id, platform_admin_required, request_actor, tenant_admin_required
from portal.tenancy.models import Tenant
from portal.tenancy.scope import get_owned_or_404
from portal.types import utcnow
from portal.wireguard import hubs as hub_service
from portal.wireguard import jobs, service
from portal.wireguard.charts import Chart, chart
from portal.wireguard.forms import HubForm, RouterForm
from portal.wireguard.hubs import HubSettings
from portal.wireguard.models import UNIQUE_NAME_INDEX, Hub, Router, Status, VpnConfiguration
from portal.wireguard.render import download_filename, render_conf, render_rsc

blueprint = Blueprint("wireguard", __name__)

CHART_SPANS = (("last hour", timedelta(hours=1)), ("last day", timedelta(days=1)))
DOWNLOADS = {
    "rsc": (render_rsc, "text/plain; charset=utf-8"),
    "conf": (render_conf, "text/plain; charset=utf-8"),
}


@blueprint.route("/routers")
@tenant_admin_required
def routers():
    tenant_id = current_tenant_id()
    args = request.args
    listing = {
        "search": args.get("q", "").strip()[:64],
        "sort": args.get("sort", "name") if args.get("sort") in service.SORTS else "name",
        "descending": args.get("dir") == "desc",
    }
    page = service.routers_page(tenant_id, page=args.get("page", 1, type=int),
                                per_page=current_app.config["PORTAL_PAGE_SIZE"], **listing)
    return page_or_fragment("wireguard/routers.html", "wireguard/_router_table.html",
                            page=page, listing=listing, usage=usage(tenant_id), now=utcnow())


@blueprint.route("/routers/subnet")
@tenant_admin_required
def subnet():
    return page_or_fragment("wireguard/subnet.html", "wireguard/_subnet.html", usage=usage(current_tenant_id()))


@blueprint.route("/routers/new", methods=["GET", "POST"])
@tenant_admin_required
def new_router():
    form = RouterForm()
    if form.validate_on_submit():
        try:
            router = service.add_router(request_actor(), current_tenant_id(), form.name.data, form.note.data or "")
            router_id, configuration_id = router.id, router.current_configuration.id
            db.session.commit()
        except DomainError as error:
            db.session.rollback()
            form.name.errors.append(str(error))
        except IntegrityError as error:
            db.session.rollback()
            if UNIQUE_NAME_INDEX not in str(error.orig):
                raise
            form.name.errors.append(f"You already have a router named {form.name.data!r}.")  # a racing twin won
        else:
            jobs.enqueue_provision(configuration_id)
            flash(f"Router {form.name.data} added; its configuration is being provisioned.")
            return redirect_after_post(url_for("wireguard.router", router_id=router_id))
    status = 422 if form.errors else 200
    return page_or_fragment("wireguard/new_router.html", "wireguard/_router_form.html", form=form), status


@blueprint.route("/routers/<int:router_id>")
@tenant_admin_required
def router(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    return render_template("wireguard/router.html", **_router_panels(router))


# The router page's live panels, each also served alone (Socket.IO hints make the page fetch them again).
ROUTER_PANELS = {"configuration": "wireguard/_configuration.html", "steps": "wireguard/_steps.html",
                 "traffic": "wireguard/_traffic.html"}


@blueprint.route("/routers/<int:router_id>/<any(configuration, steps, traffic):panel>")
@tenant_admin_required
def router_panel(router_id: int, panel: str):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    return page_or_fragment("wireguard/router.html", ROUTER_PANELS[panel], **_router_panels(router))


def _router_panels(router: Router) -> dict:
    configuration, now = router.current_configuration, utcnow()
    return {"router": router, "configuration": configuration, "history": _history(router),
            "charts": _charts(configuration, now), "action_form": ActionForm(), "now": now}


def _history(router: Router):
    return events_for(router.tenant_id, targets=[router, *router.configurations], per_page=30).items


def _charts(configuration: VpnConfiguration | None, now) -> list[Chart]:
    if configuration is None or not configuration.hub.managed:
        return []
    samples = service.traffic_samples(configuration.id, now - CHART_SPANS[-1][1])
    return [chart(label, samples, now, span) for label, span in CHART_SPANS]


@blueprint.route("/routers/<int:router_id>/revoke", methods=["GET", "POST"])
@tenant_admin_required
def revoke(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    configuration = router.current_configuration
    form = ActionForm()
    if configuration is None or not configuration.is_live:
        flash("This router has no configuration to revoke.")
        return redirect(url_for("wireguard.router", router_id=router.id), 303)
    if form.validate_on_submit():
        act(lambda: service.request_revocation(request_actor(), configuration),
            lambda _: jobs.enqueue_revoke(configuration.id),
            f"Revoking the configuration of {router.name}. This cannot be undone.")
        return redirect(url_for("wireguard.router", router_id=router.id), 303)
    return render_template("wireguard/revoke.html", router=router, configuration=configuration, form=form)


@blueprint.route("/routers/<int:router_id>/configurations", methods=["POST"])
@tenant_admin_required
def new_configuration(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        try:
            configuration = service.add_configuration(request_actor(), router)
            db.session.commit()
        except (DomainError, IntegrityError) as error:
            db.session.rollback()
            flash(str(error) if isinstance(error, DomainError) else "This router already has a configuration.",
                  "error")
        else:
            jobs.enqueue_provision(configuration.id)
            flash("New configuration created with new keys; download it once it is active.")
    return redirect(url_for("wireguard.router", router_id=router.id), 303)


@blueprint.route("/configurations/<int:configuration_id>/retry", methods=["POST"])
@tenant_admin_required
def retry(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_retry(request_actor(), configuration),
            lambda _: jobs.enqueue_provision(configuration.id), "Provisioning again.")
    return redirect(url_for("wireguard.router", router_id=configuration.router_id), 303)


@blueprint.route("/configurations/<int:configuration_id>/rotate", methods=["POST"])
@tenant_admin_required
def rotate(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_rotation(request_actor(), configuration),
            lambda _: jobs.enqueue_rotate(configuration.id),
            "New keys generated; once the hub holds them, download the new configuration. The old one stops working.")
    return redirect(url_for("wireguard.router", router_id=configuration.router_id), 303)


@blueprint.route("/configurations/<int:configuration_id>/download.<kind>")
@tenant_admin_required
def download(configuration_id: int, kind: str):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    if kind not in DOWNLOADS:
        abort(404)
    if configuration.status == Status.REVOKED:
        flash("A revoked configuration cannot be downloaded.", "error")
        return redirect(url_for("wireguard.router", router_id=configuration.router_id), 303)
    renderer, content_type = DOWNLOADS[kind]
    body = renderer(service.peer_config(configuration))
    service.record_download(request_actor(), configuration, kind)
    db.session.commit()
    filename = download_filename(configuration.router.name, configuration.id, kind)
    return Response(body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    })


@blueprint.app_template_filter("host_key_fingerprint")
def host_key_fingerprint(host_key: str | None) -> str:
    try:
        return fingerprint(host_key) if host_key else "-"
    except ValueError:
        return "(unreadable key)"


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
            jobs.enqueue_bootstrap(hub.id)
            flash(f"Bootstrap of {hub.name} queued; this page shows its outcome once a worker has run it.")
    return redirect(url_for("wireguard.hubs"), 303)


@blueprint.post("/admin/tenants/<int:tenant_id>/router-to-router")
@platform_admin_required
def set_router_to_router(tenant_id: int):
    if ActionForm().validate_on_submit():
        allowed = request.form.get("allowed") == "yes"
        hub_ids = hub_service.set_router_to_router(request_actor(), db.get_or_404(Tenant, tenant_id), allowed)
        db.session.commit()
        for hub_id in hub_ids:
            jobs.enqueue_bootstrap(hub_id)
        flash("Routers of this tenant " + ("may now reach each other" if allowed else "no longer reach each other")
              + (" once the hub firewall is updated (queued)." if hub_ids else "."))
    return redirect(url_for("tenancy.tenants"), 303)


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
            return redirect(url_for("wireguard.hubs"), 303)
    return render_template("wireguard/hub_form.html", form=form, hub=hub), 422 if form.errors else 200
