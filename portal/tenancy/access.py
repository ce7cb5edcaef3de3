"""Who is asking: the current tenant, the audit actor, and role checks for views.

Only views use this module; services receive what it returns as explicit arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from flask import abort, g, request
from flask_login import current_user, login_required

from portal.audit.service import Actor
from portal.tenancy.models import Role


def current_tenant_id() -> int | None:
    return current_user.tenant_id if current_user.is_authenticated else None


def request_actor() -> Actor:
    return Actor(user_id=current_user.id, label=current_user.email,
                 request_id=g.get("request_id"), ip=request.remote_addr)


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


tenant_admin_required = role_required(Role.TENANT_ADMIN)
platform_admin_required = role_required(Role.PLATFORM_ADMIN)
