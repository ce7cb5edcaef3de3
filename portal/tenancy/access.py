"""Who is asking, and whose pages they see: the current tenant, the audit actor, and the guards of views.

A tenant admin sees their own tenant. Platform staff see a tenant only through an impersonation they started
(`portal.tenancy.impersonation`): read-only unless they asked for changes, and never its secrets. Only views
use this module; services receive what it returns as explicit arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import abort, flash, g, redirect, request, url_for
from flask_login import current_user, login_required

from portal.audit.service import Actor
from portal.tenancy.impersonation import live_for_session, visitor_label
from portal.tenancy.models import Impersonation, Role

STAFF = (Role.PLATFORM_ADMIN, Role.SUPPORT)
READ_ONLY = ("This support session is read-only. To change anything, end it and start a new one with "
             "\"allow changes\" and a reason.")
OWNER_ONLY = ("Support staff cannot do this while looking at a tenant: downloading configurations or key "
              "material, creating download links or API tokens, and changing users or passwords are for the "
              "tenant's own admins.")


def load_impersonation() -> None:
    """Before each request: a staff member's running impersonation (checked on the server every time: ended,
    expired, or its sign-in session gone means none), kept in `g` for this request."""
    if request.endpoint == "static" or not current_user.is_authenticated or current_user.role not in STAFF:
        return
    g.impersonation = live_for_session(g.get("login_session_id"))


def impersonation() -> Impersonation | None:
    """The live impersonation of this request's sign-in session (checked once per request by
    `portal.tenancy.impersonation.load`), or None."""
    return g.get("impersonation")


def current_tenant_id() -> int | None:
    if not current_user.is_authenticated:
        return None
    if current_user.role == Role.TENANT_ADMIN:
        return current_user.tenant_id
    looking = impersonation()
    return looking.tenant_id if looking is not None else None


def request_actor() -> Actor:
    """The audit actor: the signed-in person; while impersonating, marked as such (both identities: the staff
    member as actor and impersonator, the tenant as the event's tenant)."""
    looking = impersonation()
    label = current_user.email if looking is None else visitor_label(current_user, looking.tenant)
    return Actor(user_id=current_user.id, label=label, impersonator_id=current_user.id if looking else None,
                 request_id=g.get("request_id"), ip=request.remote_addr)


def can_change() -> bool:
    """Whether this request may change the tenant's routers and clients."""
    if current_user.role == Role.TENANT_ADMIN:
        return True
    looking = impersonation()
    return looking is not None and looking.allows_changes


def can_handle_secrets() -> bool:
    """Downloads, key material, links, tokens, users and passwords: the tenant's own admins only."""
    return current_user.is_authenticated and current_user.role == Role.TENANT_ADMIN


def role_required(*roles: Role) -> Callable:
    """Log in first; then a user without one of `roles` gets a 403 page."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


def _tenant_guard(allowed: Callable[[], bool], refusal: str) -> Callable:
    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_tenant_id() is None:
                if current_user.role in STAFF and request.method == "GET":
                    flash("Choose a tenant to look at first.")
                    return redirect(url_for("support.home"))
                abort(403)
            if not allowed():
                abort(403, description=refusal)
            return view(*args, **kwargs)

        return wrapped

    return decorator


# A tenant's pages: its admins, and staff looking at it.
tenant_view_required = _tenant_guard(lambda: True, "")
# Adding, revoking, rotating, retrying: its admins, and staff who asked for changes.
tenant_change_required = _tenant_guard(can_change, READ_ONLY)
# Downloads, key material, links, tokens, users and passwords: its admins only.
tenant_owner_required = _tenant_guard(can_handle_secrets, OWNER_ONLY)
platform_admin_required = role_required(Role.PLATFORM_ADMIN)
staff_required = role_required(*STAFF)


def not_while_impersonating(view: Callable) -> Callable:
    """For a signed-in user's own account pages (password, two factors, sessions): refused while looking at a
    tenant."""

    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if impersonation() is not None:
            abort(403, description=OWNER_ONLY)
        return view(*args, **kwargs)

    return wrapped
