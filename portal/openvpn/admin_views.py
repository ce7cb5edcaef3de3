"""OpenVPN servers, for platform admins."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from portal.actions import save_form
from portal.extensions import db
from portal.forms import ActionForm
from portal.openvpn import jobs
from portal.openvpn import servers as server_service
from portal.openvpn.forms import ServerForm
from portal.openvpn.models import OpenVpnServer
from portal.tenancy.access import platform_admin_required, request_actor

blueprint = Blueprint("openvpn_servers", __name__)
@blueprint.route("/admin/openvpn")
@platform_admin_required
def servers():
    return render_template("openvpn/servers.html", servers=server_service.servers_with_client_counts(),
                           action_form=ActionForm())


@blueprint.route("/admin/openvpn/new", methods=["GET", "POST"], defaults={"server_id": None})
@blueprint.route("/admin/openvpn/<int:server_id>/edit", methods=["GET", "POST"])
@platform_admin_required
def edit_server(server_id: int | None):
    server = db.get_or_404(OpenVpnServer, server_id) if server_id is not None else None
    form = ServerForm.for_host(server, request.method)
    if form.validate_on_submit():
        settings = form.settings(server_service.ServerSettings)
        saved = save_form(form, lambda: server_service.save_server(request_actor(), settings, server))
        if saved is not None:
            flash(f"OpenVPN server {saved.name} saved. Bootstrap it (button below, or "
                  f"`flask openvpn bootstrap {saved.name}`) before it takes clients.")
            return redirect(url_for("openvpn_servers.servers"), 303)
    return render_template("openvpn/server_form.html", form=form, server=server), 422 if form.errors else 200


@blueprint.route("/admin/openvpn/<int:server_id>/bootstrap", methods=["POST"])
@platform_admin_required
def bootstrap(server_id: int):
    server = db.get_or_404(OpenVpnServer, server_id)
    if ActionForm().validate_on_submit():
        jobs.bootstrap_server.wake(server.id)
        flash(f"Bootstrapping {server.name}; the result appears here once it is done.")
    return redirect(url_for("openvpn_servers.servers"), 303)
