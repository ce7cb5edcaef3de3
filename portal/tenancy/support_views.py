"""The support home: platform staff choose a tenant, say why, and look at its pages for a limited time."""

from __future__ import annotations

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length

from portal.actions import save_form
from portal.auth import two_factor
from portal.errors import FieldError
from portal.extensions import db
from portal.tenancy import impersonation as service
from portal.tenancy.access import impersonation, request_actor, staff_required
from portal.tenancy.models import Role, Tenant

blueprint = Blueprint("support", __name__, url_prefix="/support")


class StartForm(FlaskForm):
    reason = TextAreaField("Why do you need to look?", validators=[DataRequired(), Length(max=service.REASON_MAX)],
                           description="Required; the tenant sees it in its audit log. A ticket number helps.")
    allow_changes = BooleanField("Allow changes (add, revoke, rotate, retry)",
                                 description="Read-only otherwise. Downloads, links, tokens and users stay "
                                             "out of reach either way.")
    changes_reason = TextAreaField("Which changes, and why?", validators=[Length(max=service.REASON_MAX)])
    code = StringField("Code from your authenticator app", validators=[DataRequired(), Length(max=12)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})


@blueprint.route("")
@staff_required
def home():
    search = request.args.get("q", "")
    return render_template("support/home.html", tenants=service.tenant_summaries(search), search=search)


@blueprint.route("/tenants/<int:tenant_id>/start", methods=["GET", "POST"])
@staff_required
def start(tenant_id: int):
    tenant = db.session.get(Tenant, tenant_id) or abort(404)
    if impersonation() is not None:
        flash("You are already looking at a tenant. End that first.")
        return redirect(url_for("dashboard.dashboard"))
    form = StartForm()
    if current_user.role != Role.SUPPORT:
        del form.allow_changes, form.changes_reason  # platform admins look read-only
    if not two_factor.enabled(current_user):
        form.form_errors.append("Looking at a tenant needs two factors: set them up on your account first.")
    elif form.validate_on_submit() and save_form(form, lambda: _start(form, tenant)) is not None:
        flash(f"You are looking at {tenant.name}. Everything you do here is in its audit log.")
        return redirect(url_for("dashboard.dashboard"))
    status = 422 if form.errors or form.form_errors else 200
    return render_template("support/start.html", form=form, tenant=tenant), status


def _start(form: StartForm, tenant: Tenant):
    if not two_factor.verify_fresh_totp(current_user, form.code.data.strip()):
        raise FieldError("code", "That code is wrong or was used already; wait for the next one.")
    changes_reason = None
    if "allow_changes" in form and form.allow_changes.data:
        changes_reason = form.changes_reason.data or ""
    return service.start(request_actor(), current_user, g.login_session_id, tenant.id, form.reason.data,
                         changes_reason)


@blueprint.route("/end", methods=["POST"])
@staff_required
def end():
    looking = impersonation()
    if looking is not None:
        service.end(request_actor(), looking)
        db.session.commit()
        flash(f"You stopped looking at {looking.tenant.name}.")
    return redirect(url_for("support.home"))
