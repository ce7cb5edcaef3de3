"""Fleet pages: import routers from a CSV file (upload, preview, commit), follow an import's provisioning live,
download every active router's files in one ZIP, and act on several routers chosen in the list (revoke, ZIP)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import HiddenField, TextAreaField

from portal.actions import QUEUED_LATE, commit
from portal.errors import DomainError
from portal.extensions import db
from portal.htmx import page_or_fragment
from portal.pagination import MAX_ID
from portal.tenancy.access import (
    current_tenant_id,
    request_actor,
    tenant_change_required,
    tenant_owner_required,
    tenant_view_required,
)
from portal.tenancy.scope import get_owned_or_404
from portal.wireguard import fleet, service
from portal.wireguard.fleet_models import RouterImport

blueprint = Blueprint("fleet", __name__)
SKIPPED_SHOWN = 20  # routers a message names


class UploadForm(FlaskForm):
    file = FileField("CSV file", description="UTF-8, comma- or semicolon-separated, with a header row.")
    text = TextAreaField("Or paste the rows here")


class ConfirmForm(FlaskForm):
    """The checked file travels back with the button; it is checked again, as a whole, when it is imported."""

    csv = HiddenField()


@blueprint.route("/routers/import", methods=["GET", "POST"])
@tenant_change_required
def upload():
    form = UploadForm()
    if form.validate_on_submit():
        text = _submitted_text(form)
        if text is not None:
            checked = fleet.check(current_tenant_id(), text)
            db.session.rollback()
            return _preview(checked, text)
    return render_template("wireguard/import.html", form=form, columns=fleet.COLUMNS, max_rows=fleet.MAX_ROWS,
                           imports=fleet.recent_imports(current_tenant_id())), 422 if form.errors else 200


def _submitted_text(form: UploadForm) -> str | None:
    """The uploaded file's text (else the pasted text), or None with the reason on the form."""
    upload = form.file.data
    if upload is not None and getattr(upload, "filename", ""):
        data = upload.read(fleet.MAX_CHARACTERS + 1)
        if len(data) > fleet.MAX_CHARACTERS:
            form.file.errors.append(f"The file is larger than {fleet.MAX_CHARACTERS // 1_000_000} MB; split it.")
            return None
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            form.file.errors.append("The file is not UTF-8 text: save it from your spreadsheet as “CSV UTF-8”.")
            return None
    if form.text.data and form.text.data.strip():
        return form.text.data
    form.file.errors.append("Choose a CSV file, or paste its rows.")
    return None


def _preview(checked: fleet.Checked, text: str, problem: str | None = None):
    if problem:
        checked.problems.append(problem)
    form = ConfirmForm(csv=text) if checked.ok else None
    return render_template("wireguard/import_preview.html", checked=checked, form=form), 200 if checked.ok else 422


@blueprint.route("/routers/import/confirm", methods=["POST"])
@tenant_change_required
def confirm():
    form = ConfirmForm()
    if not form.validate_on_submit() or not form.csv.data:
        flash("The import form expired; choose the file again.", "error")
        return redirect(url_for("fleet.upload"), 303)
    try:
        result = commit(lambda: fleet.import_routers(request_actor(), current_tenant_id(), form.csv.data))
    except DomainError as error:  # the subnet or pool ran out since the preview, or no hub is configured
        db.session.rollback()
        return _preview(fleet.check(current_tenant_id(), form.csv.data), form.csv.data, str(error))
    if not result.ok:  # a name was taken since the preview: nothing was imported
        return _preview(result.checked, form.csv.data)
    done = f"{len(result.router_ids)} routers imported; their configurations are being provisioned."
    flash(done if fleet.wake_hubs(result.hub_ids) else f"{done} {QUEUED_LATE}")
    return redirect(url_for("fleet.import_status", import_id=result.import_id), 303)


def _status_context(import_id: int) -> dict:
    batch = get_owned_or_404(RouterImport, import_id, current_tenant_id())
    return {"batch": batch, "progress": fleet.progress(batch)}


@blueprint.route("/routers/imports/<int:import_id>")
@tenant_view_required
def import_status(import_id: int):
    return render_template("wireguard/import_status.html", **_status_context(import_id))


@blueprint.route("/routers/imports/<int:import_id>/progress")
@tenant_view_required
def import_progress(import_id: int):
    return page_or_fragment("wireguard/import_status.html", "wireguard/_import_progress.html",
                            **_status_context(import_id))


@blueprint.route("/routers/download.zip")
@tenant_owner_required
def download_zip():
    return _zip_response(None)


def _zip_response(router_ids: list[int] | None):
    """The ZIP of the active routers (of `router_ids` when given), each file audited, or back to the list."""
    try:
        file = fleet.active_configurations_zip(request_actor(), current_tenant_id(), router_ids=router_ids)
    except DomainError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("wireguard.routers"), 303)
    db.session.commit()  # every file's download event, before the files leave
    return file.response()


# Several routers at once, chosen with the list's checkboxes (each a `router` field). The CSRF token is checked
# for every POST by the app (flask_wtf.CSRFProtect).

def _selected() -> list[int] | None:
    """The chosen router ids (those no database can hold are nobody's), or None with the reason flashed."""
    chosen = {router_id for router_id in request.form.getlist("router", type=int) if 1 <= router_id <= MAX_ID}
    if not chosen:
        flash("Select at least one router first.", "error")
        return None
    if len(chosen) > service.BULK_MAX:
        flash(f"Select at most {service.BULK_MAX} routers at a time (you selected {len(chosen)}).", "error")
        return None
    return sorted(chosen)


@blueprint.route("/routers/bulk/download.zip", methods=["POST"])
@tenant_owner_required
def bulk_download():
    router_ids = _selected()
    if router_ids is None:
        return redirect(url_for("wireguard.routers"), 303)
    return _zip_response(router_ids)


@blueprint.route("/routers/bulk/revoke", methods=["POST"])
@tenant_change_required
def bulk_revoke():
    """From the list: a page that lists what would be revoked and what is skipped; from that page (`confirmed`):
    revoke, wake each hub once, and say what was done."""
    router_ids = _selected()
    if router_ids is None:
        return redirect(url_for("wireguard.routers"), 303)
    routers = service.routers_by_id(current_tenant_id(), router_ids)
    if not request.form.get("confirmed"):
        return render_template("wireguard/bulk_revoke.html", plan=service.revocation_plan(routers))
    try:
        done = commit(lambda: service.revoke_routers(request_actor(), routers))
    except DomainError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("wireguard.routers"), 303)
    woke = fleet.wake_hubs(sorted(done.hub_ids))
    flash(_revoked_message(done) if woke else f"{_revoked_message(done)} {QUEUED_LATE}")
    return redirect(url_for("wireguard.routers"), 303)


def _revoked_message(done: service.BulkRevocation) -> str:
    count = len(done.revoked)
    message = f"Revoking {count} configuration{'' if count == 1 else 's'}." if count else "Nothing was revoked."
    if not done.skipped:
        return message
    shown = "; ".join(f"{router.name} ({reason})" for router, reason in done.skipped[:SKIPPED_SHOWN])
    more = f" and {len(done.skipped) - SKIPPED_SHOWN} more" if len(done.skipped) > SKIPPED_SHOWN else ""
    return f"{message} Skipped: {shown}{more}."
