"""OpenVPN clients for tenant admins; OpenVPN servers for platform admins."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, flash, redirect, render_template, request, url_for
from sqlalchemy.exc import IntegrityError

from portal.actions import act, save_form
from portal.audit.service import events_for
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ActionForm
from portal.htmx import page_or_fragment, redirect_after_post
from portal.openvpn import jobs, service
from portal.openvpn.forms import ClientForm, ServerForm
from portal.openvpn.models import UNIQUE_NAME_INDEX, OpenVpnServer, Status, VpnClient
from portal.openvpn.render import download_filename, render_ovpn
from portal.tenancy.access import current_tenant_id, platform_admin_required, request_actor, tenant_admin_required
from portal.tenancy.scope import get_owned_or_404

blueprint = Blueprint("openvpn", __name__)


@blueprint.route("/openvpn/clients")
@tenant_admin_required
def clients():
    search = request.args.get("q", "").strip()[:64]
    page = service.clients_page(current_tenant_id(), search=search, page=request.args.get("page", 1, type=int),
                                per_page=current_app.config["PORTAL_PAGE_SIZE"])
    return page_or_fragment("openvpn/clients.html", "openvpn/_client_table.html", page=page, search=search)


@blueprint.route("/openvpn/clients/new", methods=["GET", "POST"])
@tenant_admin_required
def new_client():
    form = ClientForm()
    if form.validate_on_submit():
        try:
            client = service.add_client(request_actor(), current_tenant_id(), form.name.data)
            client_id = client.id
            db.session.commit()
        except DomainError as error:
            db.session.rollback()
            form.name.errors.append(str(error))
        except IntegrityError as error:
            db.session.rollback()
            if UNIQUE_NAME_INDEX not in str(error.orig):
                raise
            form.name.errors.append(service.name_taken_message(form.name.data))  # a racing twin won
        else:
            jobs.enqueue_provision(client_id)
            flash(f"Client {form.name.data} added; its certificate is being created.")
            return redirect_after_post(url_for("openvpn.client", client_id=client_id))
    status = 422 if form.errors else 200
    return page_or_fragment("openvpn/new_client.html", "openvpn/_client_form.html", form=form), status


def _client_context(client: VpnClient) -> dict:
    history = events_for(client.tenant_id, targets=[client], per_page=30).items
    return {"client": client, "server": client.server, "history": history, "action_form": ActionForm()}


@blueprint.route("/openvpn/clients/<int:client_id>")
@tenant_admin_required
def client(client_id: int):
    return render_template("openvpn/client.html",
                           **_client_context(get_owned_or_404(VpnClient, client_id, current_tenant_id())))


@blueprint.route("/openvpn/clients/<int:client_id>/panel")
@tenant_admin_required
def client_panel(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    return page_or_fragment("openvpn/client.html", "openvpn/_client.html", **_client_context(client))


@blueprint.route("/openvpn/clients/<int:client_id>/download.ovpn")
@tenant_admin_required
def download(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    if not client.downloadable:
        flash("Only an active client can be downloaded." if client.status != Status.REVOKED
              else "A revoked client cannot be downloaded.", "error")
        return redirect(url_for("openvpn.client", client_id=client.id), 303)
    body = render_ovpn(client, client.server)
    service.record_download(request_actor(), client)
    db.session.commit()
    return Response(body, content_type="application/x-openvpn-profile; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{download_filename(client.name)}"',
        "Cache-Control": "no-store",
    })


@blueprint.route("/openvpn/clients/<int:client_id>/revoke", methods=["GET", "POST"])
@tenant_admin_required
def revoke(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    form = ActionForm()
    if client.status in (Status.REVOKING, Status.REVOKED):
        flash("This client is already revoked or being revoked.")
        return redirect(url_for("openvpn.client", client_id=client.id), 303)
    if form.validate_on_submit():
        act(lambda: service.request_revoke(request_actor(), client), lambda _: jobs.enqueue_revoke(client.id),
            f"Revoking {client.name}. This cannot be undone.")
        return redirect(url_for("openvpn.client", client_id=client.id), 303)
    return render_template("openvpn/revoke.html", client=client, form=form)


@blueprint.route("/openvpn/clients/<int:client_id>/retry", methods=["POST"])
@tenant_admin_required
def retry(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    if ActionForm().validate_on_submit():
        act(lambda: service.request_retry(request_actor(), client), lambda _: jobs.enqueue_provision(client.id),
            "Provisioning again.")
    return redirect(url_for("openvpn.client", client_id=client.id), 303)


# Platform admins --------------------------------------------------------------------------------

@blueprint.route("/admin/openvpn")
@platform_admin_required
def servers():
    return render_template("openvpn/servers.html", servers=service.servers_with_client_counts(),
                           action_form=ActionForm())


@blueprint.route("/admin/openvpn/new", methods=["GET", "POST"], defaults={"server_id": None})
@blueprint.route("/admin/openvpn/<int:server_id>/edit", methods=["GET", "POST"])
@platform_admin_required
def edit_server(server_id: int | None):
    server = db.get_or_404(OpenVpnServer, server_id) if server_id is not None else None
    form = ServerForm.for_host(server, request.method)
    if form.validate_on_submit():
        settings = form.settings(service.ServerSettings)
        saved = save_form(form, lambda: service.save_server(request_actor(), settings, server))
        if saved is not None:
            flash(f"OpenVPN server {saved.name} saved. Bootstrap it (button below, or "
                  f"`flask openvpn bootstrap {saved.name}`) before it takes clients.")
            return redirect(url_for("openvpn.servers"), 303)
    return render_template("openvpn/server_form.html", form=form, server=server), 422 if form.errors else 200


@blueprint.route("/admin/openvpn/<int:server_id>/bootstrap", methods=["POST"])
@platform_admin_required
def bootstrap(server_id: int):
    server = db.get_or_404(OpenVpnServer, server_id)
    if ActionForm().validate_on_submit():
        jobs.enqueue_bootstrap(server.id)
        flash(f"Bootstrapping {server.name}; the result appears here once it is done.")
    return redirect(url_for("openvpn.servers"), 303)
