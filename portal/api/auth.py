"""Bearer tokens, and nothing else: the API never reads the session cookie, so a signed-in browser calls
nothing here and no cross-site form can (which is why the blueprint needs no CSRF token)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import g, request

from portal.actions import first_read
from portal.api import tokens
from portal.api.errors import ApiError
from portal.api.models import ApiToken, Scope
from portal.audit.service import Actor
from portal.extensions import db
from portal.types import utcnow

CHALLENGE = 'Bearer realm="api"'


@dataclass(frozen=True)
class Caller:
    """The token a request came with, as plain values (they outlive the request's commits)."""

    token_id: int
    tenant_id: int
    name: str
    scope: str

    @property
    def can_write(self) -> bool:
        return self.scope == Scope.WRITE

    def actor(self) -> Actor:
        return Actor(user_id=None, label=f"API token {self.name}", request_id=g.get("request_id"),
                     ip=request.remote_addr)


def _refuse(code: str, message: str) -> ApiError:
    challenge = CHALLENGE if code == "unauthenticated" else f'{CHALLENGE}, error="invalid_token"'
    return ApiError(code, message, headers={"WWW-Authenticate": challenge})


def authenticate() -> Caller:
    """The caller of this request, from `Authorization: Bearer vpt_...`; 401 otherwise. Its use is noted (time and
    address) in a commit of its own, before the request's work."""
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise _refuse("unauthenticated", "Send an API token: `Authorization: Bearer vpt_...` (tenant admins make "
                      "them at /api-tokens). Cookies do not sign API requests in.")
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _refuse("unauthenticated", "Only bearer tokens are accepted: `Authorization: Bearer vpt_...`.")
    token: ApiToken | None = first_read(lambda: tokens.find(secret.strip()))
    now = utcnow()
    if token is None:
        raise _refuse("invalid_token", "This token is not known.")
    if token.revoked_at is not None:
        raise _refuse("token_revoked", f"The token {token.name!r} was revoked.")
    if token.expired(now):
        raise _refuse("token_expired", f"The token {token.name!r} expired at {token.expires_at.isoformat()}.")
    caller = Caller(token.id, token.tenant_id, token.name, token.scope)
    if tokens.touch(token, request.remote_addr, now):
        db.session.commit()
    g.api_caller = caller
    return caller


def require_write(caller: Caller) -> None:
    if not caller.can_write:
        raise ApiError("insufficient_scope", f"The token {caller.name!r} can only read; this needs a write token.")
