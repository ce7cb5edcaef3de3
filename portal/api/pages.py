"""API tokens for a tenant's admins (/api-tokens): the list, making one (shown once) and revoking one.

Tokens are secrets of the tenant: support staff looking at the tenant get a 403 here, as for downloads.
"""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, url_for

from portal.actions import act, save_form
from portal.api import tokens
from portal.api.forms import TokenForm
from portal.api.models import ApiToken
from portal.forms import ActionForm
from portal.tenancy.access import current_tenant_id, request_actor, tenant_owner_required
from portal.tenancy.scope import get_owned_or_404
from portal.types import utcnow

blueprint = Blueprint("api_tokens", __name__)


@blueprint.route("/api-tokens", methods=["GET", "POST"])
@tenant_owner_required
def tokens_page():
    form = TokenForm()
    if form.validate_on_submit():
        tenant_id = current_tenant_id()
        created = save_form(form, lambda: _shown_once(tokens.create(request_actor(), tenant_id, form.name.data,
                                                                    form.scope.data, form.expiry_days())))
        if created is not None:
            # Rendered, not redirected: the token must not pass through a cookie or a URL on its way to the page.
            response = make_response(render_template("api/token_created.html", created=created), 201)
            response.headers["Cache-Control"] = "no-store"
            return response
    status = 422 if form.errors else 200
    return render_template("api/tokens.html", form=form, rows=tokens.tokens_of(current_tenant_id()), now=utcnow(),
                           action_form=ActionForm()), status


def _shown_once(created: tokens.Created) -> dict:
    """What the page shows, read before the commit expires the row."""
    token = created.token
    return {"secret": created.secret, "name": token.name, "scope": token.scope, "expires_at": token.expires_at}


@blueprint.route("/api-tokens/<int:token_id>/revoke", methods=["POST"])
@tenant_owner_required
def revoke(token_id: int):
    token = get_owned_or_404(ApiToken, token_id, current_tenant_id())
    name = token.name
    if ActionForm().validate_on_submit():
        act(lambda: tokens.revoke(request_actor(), token), lambda _: None,
            f"The token {name!r} is revoked: it is refused from now on.")
    else:
        flash("The form expired; try again.", "error")
    return redirect(url_for("api_tokens.tokens_page"), 303)
