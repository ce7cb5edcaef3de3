"""A router's RouterOS API access on its page: the form, Test connection, Push configuration (portal.routeros).

The panel (`templates/wireguard/_router_api.html`) is part of the router page and also served alone, for the
live updates that re-fetch it. The password is key material: never sent back to the browser.
"""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for

from portal.actions import act, save_form
from portal.forms import ActionForm
from portal.htmx import redirect_after_post, wants_fragment
from portal.routeros import jobs, service
from portal.routeros.forms import RouterApiForm
from portal.routeros.models import RouterPush
from portal.tenancy.access import current_tenant_id, request_actor, tenant_change_required, tenant_view_required
from portal.tenancy.scope import get_owned_or_404
from portal.types import utcnow
from portal.wireguard.models import Router

blueprint = Blueprint("routeros", __name__)


@blueprint.app_template_global("latest_router_push")
def latest_router_push(router_id: int) -> RouterPush | None:
    """The router's newest push, for its page's API panel."""
    return service.latest_push(router_id)


def _back(router_id: int):
    return redirect(url_for("wireguard.router", router_id=router_id), 303)


@blueprint.route("/routers/<int:router_id>/routeros/panel")
@tenant_view_required
def panel(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if not wants_fragment():
        return redirect(url_for("wireguard.router", router_id=router_id))
    response = make_response(render_template("wireguard/_router_api.html", router=router, action_form=ActionForm(),
                                             now=utcnow()))
    response.vary.add("HX-Request")
    return response


@blueprint.route("/routers/<int:router_id>/routeros", methods=["GET", "POST"])
@tenant_change_required
def edit(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    form = RouterApiForm.for_router(router, request.method)
    if form.validate_on_submit():
        saved = save_form(form, lambda: service.save_access(request_actor(), router, form.settings()).id,
                          near="address")
        if saved is not None:
            flash("API access saved. Test the connection to see the router's facts, then push its configuration.")
            return redirect_after_post(url_for("wireguard.router", router_id=router_id))
    status = 422 if form.errors or form.form_errors else 200
    return render_template("wireguard/router_api.html", router=router, form=form), status


@blueprint.route("/routers/<int:router_id>/routeros/remove", methods=["POST"])
@tenant_change_required
def remove(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.remove_access(request_actor(), router), lambda _: None,
            "API access removed: the portal no longer connects to this router.")
    return _back(router_id)


@blueprint.route("/routers/<int:router_id>/routeros/test", methods=["POST"])
@tenant_change_required
def test(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_test(request_actor(), router), lambda _: jobs.test_connection.wake(router_id),
            "Testing the connection; the router's answer appears on this page in a few seconds.")
    return _back(router_id)


@blueprint.route("/routers/<int:router_id>/routeros/push", methods=["POST"])
@tenant_change_required
def push(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_push(request_actor(), router).id, jobs.run_push.wake,
            "Pushing the configuration; the router is active once the hub sees its handshake.")
    return _back(router_id)
