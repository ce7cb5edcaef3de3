"""Platform admin pages: tenants and users."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from wtforms import SelectChoice

from portal.errors import DomainError
from portal.extensions import db
from portal.tenancy import service
from portal.tenancy.access import platform_admin_required, request_actor
from portal.tenancy.forms import TenantForm, UserForm
from portal.tenancy.models import Role

blueprint = Blueprint("tenancy", __name__, url_prefix="/admin")


@blueprint.route("/tenants", methods=["GET", "POST"])
@platform_admin_required
def tenants():
    form = TenantForm()
    if form.validate_on_submit():
        try:
            tenant = service.create_tenant(request_actor(), form.name.data)
        except DomainError as error:
            db.session.rollback()
            form.name.errors.append(str(error))
        else:
            db.session.commit()
            flash(f"Tenant {tenant.name} created.")
            return redirect(url_for("tenancy.tenants"))
    return render_template("tenancy/tenants.html", form=form, tenants=service.all_tenants())


@blueprint.route("/users", methods=["GET", "POST"])
@platform_admin_required
def users():
    form = UserForm()
    form.tenant_id.choices = [SelectChoice(0, "- none -")] + [SelectChoice(t.id, t.name) for t in service.all_tenants()]
    if form.validate_on_submit():
        try:
            user = service.create_user(request_actor(), form.email.data, form.password.data,
                                       Role(form.role.data), form.tenant_id.data or None)
        except DomainError as error:
            db.session.rollback()
            form.form_errors.append(str(error))
        else:
            db.session.commit()
            flash(f"User {user.email} created.")
            return redirect(url_for("tenancy.users"))
    return render_template("tenancy/users.html", form=form, users=service.all_users())
