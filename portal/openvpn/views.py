"""OpenVPN clients for tenant admins (servers are in `admin_views`)."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

from portal.actions import act, save_form
from portal.audit.service import events_for
from portal.downloads import NotDownloadable, openvpn_file
from portal.extensions import db
from portal.forms import ActionForm
from portal.htmx import page_or_fragment, redirect_after_post
from portal.openvpn import jobs, servers, service
from portal.openvpn.forms import ClientForm
from portal.openvpn.models import Status, VpnClient
from portal.tenancy.access import (
    current_tenant_id,
    request_actor,
    tenant_change_required,
    tenant_owner_required,
    tenant_view_required,
)
from portal.tenancy.scope import get_owned_or_404

blueprint = Blueprint("openvpn", __name__)


@blueprint.route("/openvpn/clients")
@tenant_view_required
def clients():
    search = request.args.get("q", "").strip()[:64]
    page = service.clients_page(current_tenant_id(), search=search, page=request.args.get("page", 1, type=int),
                                per_page=current_app.config["PORTAL_PAGE_SIZE"])
    return page_or_fragment("openvpn/clients.html", "openvpn/_client_table.html", page=page, search=search,
                            server_open=servers.any_server_open())


@blueprint.route("/openvpn/clients/new", methods=["GET", "POST"])
@tenant_change_required
def new_client():
    form = ClientForm()
    if form.validate_on_submit():
        client_id = save_form(form, lambda: service.add_client(request_actor(), current_tenant_id(), form.name.data).id,
                              jobs.provision_client.wake, near="name")
        if client_id is not None:
            flash(f"Client {form.name.data} added; its certificate is being created.")
            return redirect_after_post(url_for("openvpn.client", client_id=client_id))
    status = 422 if form.errors else 200
    return page_or_fragment("openvpn/new_client.html", "openvpn/_client_form.html", form=form), status


def _client_context(client: VpnClient) -> dict:
    history = events_for(client.tenant_id, targets=[client], per_page=30).items
    return {"client": client, "server": client.server, "history": history, "action_form": ActionForm()}


@blueprint.route("/openvpn/clients/<int:client_id>")
@tenant_view_required
def client(client_id: int):
    return render_template("openvpn/client.html",
                           **_client_context(get_owned_or_404(VpnClient, client_id, current_tenant_id())))


@blueprint.route("/openvpn/clients/<int:client_id>/panel")
@tenant_view_required
def client_panel(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    return page_or_fragment("openvpn/client.html", "openvpn/_client.html", **_client_context(client))


@blueprint.route("/openvpn/clients/<int:client_id>/download.ovpn")
@tenant_owner_required
def download(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    try:
        file = openvpn_file(request_actor(), client)
    except NotDownloadable as error:
        flash(str(error), "error")
        return redirect(url_for("openvpn.client", client_id=client.id), 303)
    db.session.commit()
    return file.response()


@blueprint.route("/openvpn/clients/<int:client_id>/revoke", methods=["GET", "POST"])
@tenant_change_required
def revoke(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    form = ActionForm()
    if client.status in (Status.REVOKING, Status.REVOKED):
        flash("This client is already revoked or being revoked.")
        return redirect(url_for("openvpn.client", client_id=client.id), 303)
    if form.validate_on_submit():
        act(lambda: service.request_revocation(request_actor(), client), lambda _: jobs.revoke_client.wake(client_id),
            f"Revoking {client.name}. This cannot be undone.")
        return redirect(url_for("openvpn.client", client_id=client_id), 303)
    return render_template("openvpn/revoke.html", client=client, form=form)


@blueprint.route("/openvpn/clients/<int:client_id>/retry", methods=["POST"])
@tenant_change_required
def retry(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_retry(request_actor(), client), lambda _: jobs.provision_client.wake(client_id),
            "Provisioning again.")
    return redirect(url_for("openvpn.client", client_id=client_id), 303)
