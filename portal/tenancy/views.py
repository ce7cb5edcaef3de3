"""Tenants (platform admins) and users: every user for platform admins at /admin/users, a tenant's own users for
its admins at /users. Users are invited by e-mail; their role, activation, two factors and password links are
managed from their page. Another tenant's user, or platform staff, is a 404 on a tenant admin's pages."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, abort, current_app, flash, redirect, render_template, url_for
from wtforms import SelectChoice

from portal import mail
from portal.actions import commit, save_form
from portal.auth.models import TokenPurpose
from portal.errors import DomainError
from portal.extensions import db
from portal.forms import ActionForm
from portal.tenancy import service
from portal.tenancy.access import (
    OWNER_ONLY,
    current_tenant_id,
    impersonation,
    platform_admin_required,
    request_actor,
    tenant_owner_required,
)
from portal.tenancy.forms import InviteForm, RoleForm, TenantForm, TenantInviteForm, TenantRemoveForm
from portal.tenancy.models import Role, Tenant, User
from portal.tenancy.scope import get_owned_or_404
from portal.wireguard import jobs

blueprint = Blueprint("tenancy", __name__, url_prefix="/admin")
users_blueprint = Blueprint("users", __name__)

ACTIONS = "'deactivate', 'reactivate', 'reset-two-factor', 'send-password-link'"


@blueprint.route("/tenants", methods=["GET", "POST"])
@platform_admin_required
def tenants():
    form = TenantForm()
    if form.validate_on_submit():
        tenant = save_form(form, lambda: service.create_tenant(request_actor(), form.name.data), near="name")
        if tenant is not None:
            flash(f"Tenant {tenant.name} created.")
            return redirect(url_for("tenancy.tenants"))
    return render_template("tenancy/tenants.html", form=form, tenants=service.all_tenants()), _status(form)


@blueprint.route("/tenants/<int:tenant_id>/edit", methods=["GET", "POST"])
@platform_admin_required
def edit_tenant(tenant_id: int):
    tenant = db.get_or_404(Tenant, tenant_id)
    form = TenantForm(obj=tenant)
    if form.validate_on_submit():
        _refuse_while_impersonating()
        renamed = save_form(form, lambda: service.rename_tenant(request_actor(), tenant, form.name.data).name,
                            near="name")
        if renamed is not None:
            flash(f"The tenant is now called {renamed}.")
            return redirect(url_for("tenancy.tenants"), 303)
    return render_template("tenancy/tenant_edit.html", form=form, tenant=tenant), _status(form)


@blueprint.route("/tenants/<int:tenant_id>/remove", methods=["GET", "POST"])
@platform_admin_required
def remove_tenant(tenant_id: int):
    tenant = db.get_or_404(Tenant, tenant_id)
    form = TenantRemoveForm()
    form.confirm_name.description = f"Type {tenant.name} exactly as shown."
    if form.validate_on_submit():
        _refuse_while_impersonating()
        name = tenant.name
        if form.confirm_name.data != name:
            form.confirm_name.errors.append(f"That is not {name}: type the name exactly as shown, or cancel.")
        elif (hub_ids := save_form(form, lambda: service.remove_tenant(request_actor(), tenant))) is not None:
            for hub_id in hub_ids:  # its address and firewall rules leave the hub
                jobs.bootstrap_hub.wake(hub_id)
            flash(f"Tenant {name} removed: its users can no longer sign in and its subnet is free again. "
                  "Its audit events stay in the platform's log.")
            return redirect(url_for("tenancy.tenants"), 303)
    return render_template("tenancy/tenant_delete.html", form=form, tenant=tenant,
                           blockers=service.removal_blockers(tenant.id), users=len(tenant.users)), _status(form)


def _status(form) -> int:
    return 422 if form.errors else 200


@dataclass(frozen=True)
class Area:
    """Whose users a page manages: every user (platform admins) or the current tenant's (its admins)."""

    blueprint: str
    platform: bool

    def scope(self) -> int | None:
        return None if self.platform else current_tenant_id()

    def url(self, endpoint: str, **values) -> str:
        return url_for(f"{self.blueprint}.{endpoint}", **values)


PLATFORM, TENANT = Area("tenancy", platform=True), Area("users", platform=False)


# Platform admins: /admin/users

@blueprint.route("/users", methods=["GET", "POST"])
@platform_admin_required
def users():
    form = InviteForm()
    form.tenant_id.choices = _tenant_choices()
    if form.validate_on_submit():
        _refuse_while_impersonating()
        role = Role(form.role.data)
        tenant_id = (form.tenant_id.data or None) if role == Role.TENANT_ADMIN else None
        sent = save_form(form, lambda: service.invite_user(request_actor(), form.email.data, role, tenant_id, _link),
                         near="email")
        if sent is not None:
            flash(_sent_message(sent))
            return redirect(url_for("tenancy.users"), 303)
    return _users_page(PLATFORM, form)


@blueprint.route("/users/<int:user_id>")
@platform_admin_required
def user(user_id: int):
    return _user_page(PLATFORM, _load(PLATFORM, user_id))


@blueprint.route("/users/<int:user_id>/role", methods=["POST"])
@platform_admin_required
def change_role(user_id: int):
    _refuse_while_impersonating()
    user = _load(PLATFORM, user_id)
    form = _role_form(user)
    if user.id == request_actor().user_id:  # the page shows no role form for oneself: say so above it
        flash("You cannot change your own role; ask another platform admin.", "error")
        return redirect(url_for("tenancy.user", user_id=user_id), 303)
    if form.validate_on_submit():
        role = Role(form.role.data)
        tenant_id = (form.tenant_id.data or None) if role == Role.TENANT_ADMIN else None
        email = user.email
        changed = save_form(form, lambda: service.change_role(request_actor(), user, role, tenant_id), near="role")
        if changed is not None:
            flash(f"{email} is now {role.label.lower()}; their sessions ended, so they sign in again.")
            return redirect(url_for("tenancy.user", user_id=user_id), 303)
    return _user_page(PLATFORM, user, role_form=form)


@blueprint.route(f"/users/<int:user_id>/<any({ACTIONS}):action>", methods=["POST"])
@platform_admin_required
def user_action(user_id: int, action: str):
    return _act(PLATFORM, user_id, action)


# Tenant admins: /users (their tenant's users only)

@users_blueprint.route("/users", methods=["GET", "POST"])
@tenant_owner_required
def users_of_tenant():
    form = TenantInviteForm()
    if form.validate_on_submit():
        tenant_id = current_tenant_id()
        sent = save_form(form, lambda: service.invite_user(request_actor(), form.email.data, Role.TENANT_ADMIN,
                                                           tenant_id, _link), near="email")
        if sent is not None:
            flash(_sent_message(sent))
            return redirect(url_for("users.users_of_tenant"), 303)
    return _users_page(TENANT, form)


@users_blueprint.route("/users/<int:user_id>")
@tenant_owner_required
def user_of_tenant(user_id: int):
    return _user_page(TENANT, _load(TENANT, user_id))


@users_blueprint.route(f"/users/<int:user_id>/<any({ACTIONS}):action>", methods=["POST"])
@tenant_owner_required
def user_of_tenant_action(user_id: int, action: str):
    return _act(TENANT, user_id, action)


# Shared by both areas

def _load(area: Area, user_id: int) -> User:
    """The user if this area may manage them; a 404 otherwise (another tenant's user, or staff)."""
    if area.platform:
        user = db.session.get(User, user_id)
        if user is None:
            abort(404)
        return user
    return get_owned_or_404(User, user_id, current_tenant_id())


def _users_page(area: Area, form):
    status = 422 if form.errors else 200
    return render_template("tenancy/users.html", area=area, form=form, rows=service.users_overview(area.scope()),
                           invite_hours=_invite_hours()), status


def _user_page(area: Area, user: User, role_form: RoleForm | None = None):
    status = 422 if role_form is not None and role_form.errors else 200
    return render_template("tenancy/user.html", area=area, row=service.user_row(user),
                           role_form=(role_form or _role_form(user)) if area.platform else None,
                           is_self=user.id == request_actor().user_id), status


def _role_form(user: User) -> RoleForm:
    form = RoleForm(data={"role": user.role.value, "tenant_id": user.tenant_id or 0})
    form.tenant_id.choices = _tenant_choices()
    return form


def _act(area: Area, user_id: int, action: str):
    _refuse_while_impersonating()
    user = _load(area, user_id)
    if ActionForm().validate_on_submit():
        actor, email = request_actor(), user.email
        changes = {
            "deactivate": (lambda: service.set_active(actor, user, False),
                           f"{email} is deactivated: their sessions ended and they cannot sign in."),
            "reactivate": (lambda: service.set_active(actor, user, True), f"{email} is active again."),
            "reset-two-factor": (lambda: service.reset_two_factor(actor, user),
                                 f"{email}'s two factors are reset: they set them up again at their next sign-in."),
            "send-password-link": (lambda: service.send_password_link(actor, user, _link), None),
        }
        change, done = changes[action]
        try:
            result = commit(change)
        except DomainError as error:
            db.session.rollback()
            flash(str(error), "error")
        else:
            flash(done or _sent_message(result))
    return redirect(area.url("user" if area.platform else "user_of_tenant", user_id=user_id), 303)


def _refuse_while_impersonating() -> None:
    """Staff looking at a tenant change no users (their audit rows would read as the tenant's)."""
    if impersonation() is not None:
        abort(403, description=OWNER_ONLY)


def _tenant_choices() -> list[SelectChoice]:
    return [SelectChoice(0, "- none -")] + [SelectChoice(t.id, t.name) for t in service.all_tenants()]


def _link(purpose: TokenPurpose, token: str) -> str:
    endpoint = "account.invitation" if purpose == TokenPurpose.INVITE else "account.password_reset"
    return url_for(endpoint, token=token, _external=True)


def _sent_message(sent: service.Sent) -> str:
    what = "An invitation" if sent.purpose == TokenPurpose.INVITE else "A password reset link"
    if sent.outbox is None:
        return f"{what} was sent to {sent.email}."
    return (f"{what} for {sent.email} was written to {mail.where(sent.outbox)} (no mail server is set up: "
            "PORTAL_MAIL_HOST).")


def _invite_hours() -> int:
    return current_app.config["PORTAL_INVITE_HOURS"]
