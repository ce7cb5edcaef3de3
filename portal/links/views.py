"""Download links: the panel on the router and OpenVPN client pages (tenant admins only), and the public pages
a link opens, which need no sign-in: `/l/<token>` (a landing page; its Download button's POST uses the link)
and `/r/<token>.rsc` (the router one-liner's URL; the router's GET uses it).

The panel is `templates/links/_panel.html`, included by the router and client pages; it finds its own data
through `links_panel(...)` (a template global registered here) and is served alone for live refreshes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from portal import mail
from portal.actions import act, commit, save_form
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ActionForm
from portal.htmx import page_or_fragment, redirect_after_post
from portal.links import service
from portal.links.forms import EmailLinkForm, WireGuardEmailLinkForm
from portal.links.models import DownloadLink, LinkKind
from portal.openvpn.models import VpnClient
from portal.tenancy.access import can_handle_secrets, current_tenant_id, request_actor, tenant_owner_required
from portal.tenancy.scope import get_owned_or_404
from portal.types import utcnow
from portal.wireguard.models import Router, Status, VpnConfiguration

blueprint = Blueprint("links", __name__)

# Pages behind a token: never cached, never indexed, and the token never leaves in a Referer header.
PRIVATE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Robots-Tag": "noindex"}


def link_url(kind: str, token: str) -> str:
    """A link's absolute URL, with the scheme and host of this request (through PORTAL_TRUSTED_PROXIES)."""
    endpoint = "links.landing" if kind == LinkKind.EMAIL else "links.router_fetch"
    return url_for(endpoint, token=token, _external=True)


# The panel ----------------------------------------------------------------------------------------

@dataclass
class Panel:
    """What `templates/links/_panel.html` shows for one router (its current configuration) or client."""

    router: Router | None = None
    configuration: VpnConfiguration | None = None
    client: VpnClient | None = None
    form: EmailLinkForm | None = None
    action_form: ActionForm = field(default_factory=ActionForm)
    now: datetime = field(default_factory=utcnow)

    @property
    def target(self) -> VpnConfiguration | VpnClient | None:
        return self.configuration if self.router is not None else self.client

    @property
    def wireguard(self) -> bool:
        return self.router is not None

    @property
    def active(self) -> bool:
        """Links are offered for an active configuration or client only."""
        target = self.target
        if target is None or not target.downloadable:
            return False
        return target.status == Status.ACTIVE

    @property
    def listing(self) -> service.Listing:
        return service.links_of(self.target, self.now)

    @property
    def src(self) -> str:
        if self.wireguard:
            return url_for("links.router_panel", router_id=self.router.id)
        return url_for("links.client_panel", client_id=self.client.id)

    @property
    def live_match(self) -> str:
        match = {"router_id": self.router.id} if self.wireguard else {"kind": "client", "id": self.client.id}
        return json.dumps(match)

    @property
    def email_action(self) -> str:
        if self.wireguard:
            return url_for("links.email_configuration", configuration_id=self.configuration.id)
        return url_for("links.email_client", client_id=self.client.id)

    @property
    def back(self) -> str:
        """The page the panel is on."""
        if self.wireguard:
            return url_for("wireguard.router", router_id=self.router.id)
        return url_for("openvpn.client", client_id=self.client.id)

    @property
    def title(self) -> str:
        return self.router.name if self.wireguard else self.client.name


def _email_form(wireguard: bool) -> EmailLinkForm:
    """A fresh form (not filled from this request's POST) with the default expiry."""
    form_class = WireGuardEmailLinkForm if wireguard else EmailLinkForm
    return form_class(formdata=None, data={"hours": current_app.config["PORTAL_LINK_DEFAULT_HOURS"]})


def links_panel(router: Router | None = None, client: VpnClient | None = None) -> Panel | None:
    """The panel of a router or client page; None for anyone but the tenant's own admins (staff see no link
    controls)."""
    if not can_handle_secrets() or (router is None and client is None):
        return None
    if router is not None:
        return Panel(router=router, configuration=router.current_configuration, form=_email_form(True))
    return Panel(client=client, form=_email_form(False))


@blueprint.app_context_processor
def panel_global():
    return {"links_panel": links_panel}


@blueprint.route("/links/routers/<int:router_id>/panel")
@tenant_owner_required
def router_panel(router_id: int):
    router = get_owned_or_404(Router, router_id, current_tenant_id())
    return page_or_fragment("links/panel_page.html", "links/_panel.html", link_panel=links_panel(router=router))


@blueprint.route("/links/clients/<int:client_id>/panel")
@tenant_owner_required
def client_panel(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    return page_or_fragment("links/panel_page.html", "links/_panel.html", link_panel=links_panel(client=client))


# Creating and revoking (tenant admins only) -------------------------------------------------------

@blueprint.route("/links/configurations/<int:configuration_id>/email", methods=["POST"])
@tenant_owner_required
def email_configuration(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    panel = Panel(router=configuration.router, configuration=configuration, form=WireGuardEmailLinkForm())
    return _send(panel, lambda: panel.form.file_format.data)


@blueprint.route("/links/clients/<int:client_id>/email", methods=["POST"])
@tenant_owner_required
def email_client(client_id: int):
    client = get_owned_or_404(VpnClient, client_id, current_tenant_id())
    panel = Panel(client=client, form=EmailLinkForm())
    return _send(panel, lambda: "ovpn")


def _send(panel: Panel, file_format):
    form, back, target = panel.form, panel.back, panel.target
    if form.validate_on_submit():
        sent = save_form(form, lambda: service.create_email_link(
            request_actor(), target, form.recipient.data, form.hours.data, file_format(), link_url),
            near="recipient")
        if sent is not None:
            flash(_sent_message(sent, panel.title))
            return redirect_after_post(back)
    return page_or_fragment("links/send.html", "links/_email_form.html", link_panel=panel), 422


def _sent_message(sent: service.Sent, title: str) -> str:
    if sent.outbox is None:
        return f"A download link for {title} was sent to {sent.recipient}."
    return (f"A download link for {title} to {sent.recipient} was written to {mail.where(sent.outbox)} (no mail "
            "server is set up: PORTAL_MAIL_HOST).")


@blueprint.route("/links/configurations/<int:configuration_id>/router-command", methods=["POST"])
@tenant_owner_required
def router_command(configuration_id: int):
    configuration = get_owned_or_404(VpnConfiguration, configuration_id, current_tenant_id())
    router = configuration.router
    back = url_for("wireguard.router", router_id=router.id)
    if not ActionForm().validate_on_submit():
        return redirect(back, 303)
    try:
        made = commit(lambda: _shown(service.create_router_fetch_link(request_actor(), configuration, link_url)))
    except DomainError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(back, 303)
    command, expires_at = made
    page = render_template("links/router_command.html", router=router, command=command, expires_at=expires_at,
                           minutes=current_app.config["PORTAL_ROUTER_FETCH_MINUTES"], local=_local_host(),
                           link_panel=links_panel(router=router))
    return page, 200, PRIVATE_HEADERS  # shown once: the token is not kept


def _shown(made: service.RouterCommand) -> tuple[str, datetime]:
    return made.command, made.link.expires_at  # read before the commit expires the row


def _local_host() -> bool:
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "127.0.0.1", "::1") or host.endswith(".localhost")


@blueprint.route("/links/<int:link_id>/revoke", methods=["POST"])
@tenant_owner_required
def revoke(link_id: int):
    link = get_owned_or_404(DownloadLink, link_id, current_tenant_id())
    back = (url_for("wireguard.router", router_id=link.configuration.router_id) if link.configuration_id
            else url_for("openvpn.client", client_id=link.client_id))
    if ActionForm().validate_on_submit():
        act(lambda: service.revoke_link(request_actor(), link), lambda _: None,
            "The link is revoked: it no longer works.")
    return redirect_after_post(back)


# The public side (no sign-in) -----------------------------------------------------------------------

@blueprint.route("/l/<token>", methods=["GET", "POST"])
def landing(token: str):
    """GET shows what the link downloads and never uses it (mail scanners open links too); the Download
    button's POST uses it and returns the file."""
    ip = request.remote_addr or "-"
    wait = service.lookup_wait(ip)
    if wait:
        return _page("links/gone.html", 429, {"Retry-After": str(wait)}, title="Too many attempts",
                     message=f"Too many links that do not work were opened from your address. Try again in "
                             f"{service.wait_minutes(wait)} minute(s).")
    try:
        link = service.open_link(token, LinkKind.EMAIL)
    except (service.UnknownLink, service.LinkGone) as error:
        service.count_failed_lookup(ip)
        return _refused(error)
    form = ActionForm()
    if form.validate_on_submit():
        try:
            file = commit(lambda: service.use_link(token, LinkKind.EMAIL, ip, g.get("request_id")))
        except DomainError as error:
            db.session.rollback()  # a race lost to another request, or the target went away meanwhile
            return _refused(error)
        response = file.response()
        response.headers.update(PRIVATE_HEADERS)
        return response
    return _page("links/landing.html", 200, link=link, form=form, now=utcnow())


@blueprint.route("/r/<token>.rsc")
def router_fetch(token: str):
    """The router one-liner's URL: the router's GET uses the link and gets the RouterOS script. A HEAD says
    whether it would work, and uses nothing."""
    ip = request.remote_addr or "-"
    wait = service.lookup_wait(ip)
    if wait:
        return _text(f"Too many links that do not work were fetched from {ip}; try again in "
                     f"{service.wait_minutes(wait)} minute(s).", 429, {"Retry-After": str(wait)})
    try:
        service.open_link(token, LinkKind.ROUTER_FETCH)
    except (service.UnknownLink, service.LinkGone) as error:
        service.count_failed_lookup(ip)
        return _text(str(error), 404 if isinstance(error, service.UnknownLink) else 410)
    if request.method == "HEAD":
        return _text("", 200)
    try:
        file = commit(lambda: service.use_link(token, LinkKind.ROUTER_FETCH, ip, g.get("request_id")))
    except DomainError as error:
        db.session.rollback()
        return _text(str(error), 410)
    response = file.response()
    response.headers.update(PRIVATE_HEADERS)
    return response


def _refused(error: DomainError):
    if isinstance(error, service.UnknownLink):
        return _page("links/gone.html", 404, title="Unknown link", message=str(error))
    if isinstance(error, service.LinkGone):
        titles = {"used": "This link was used already", "expired": "This link has expired",
                  "revoked": "This link was revoked"}
        return _page("links/gone.html", 410, title=titles[error.state.value], message=str(error))
    return _page("links/gone.html", 410, title="This file can no longer be downloaded", message=str(error))


def _page(template: str, status: int, headers: dict | None = None, **context):
    return render_template(template, **context), status, {**PRIVATE_HEADERS, **(headers or {})}


def _text(body: str, status: int, headers: dict | None = None):
    return body + ("\n" if body else ""), status, {"Content-Type": "text/plain; charset=utf-8", **PRIVATE_HEADERS,
                                                   **(headers or {})}
