"""RouterOS API access per router, and the requests that jobs carry out (test, push, key rotation over the API).

Like every service: explicit arguments, add and flush, the caller commits once; jobs are woken after the commit.
The router's API password is key material: it is stored encrypted, never sent back to a browser, never put in an
audit row (the audit log refuses keys named like secrets anyway), and blotted out of the router's error messages.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, update

from portal import live
from portal.audit.service import Actor, record
from portal.errors import Conflict, FieldError
from portal.extensions import db
from portal.remote import HOST_NAME
from portal.routeros.client import Access
from portal.routeros.hub import handshakes_visible
from portal.routeros.models import IN_FLIGHT, PushKind, PushStatus, PushStep, RouterPush
from portal.types import utcnow
from portal.wireguard.models import Router, Status, VpnConfiguration

KIND = "router_push"  # what live hints call a RouterPush
PUSHABLE = (Status.PENDING, Status.PROVISIONING, Status.ACTIVE)  # a push waits for the hub if need be
PASSWORD_MAX = 256
# While a rotation runs over the API, the configuration stays `rotating` (so the reconciler leaves both peers
# alone) with a retry time this far ahead, renewed at every step, so that the hub's batch (`sync_hub`), which
# would swap the peer at once, leaves it to the push; if the push's jobs stopped for this long, the batch takes
# over and finishes the rotation the classic way.
ROTATION_HOLD = timedelta(hours=1)
ADDRESS_RULE = "A host name or an IP address: the router's tunnel address, or a public one for the first push."


@dataclass(kw_only=True)
class AccessSettings:
    """What a person enters for a router's API access; a blank password keeps the stored one."""

    address: str
    port: int = 8729
    tls: bool = True
    username: str
    password: str = ""
    forget_certificate: bool = False


def save_access(actor: Actor, router: Router, settings: AccessSettings) -> Router:
    """Set the router's API access; each bad value is a FieldError naming its field (nothing is saved)."""
    address = (settings.address or "").strip()
    username = (settings.username or "").strip()
    password = settings.password or ""
    if not address or len(address) > 255 or not _host(address):
        raise FieldError("address", ADDRESS_RULE)
    if not 1 <= (settings.port or 0) <= 65535:
        raise FieldError("port", "Ports are 1 to 65535 (the API listens on 8728, with TLS on 8729).")
    if not username or len(username) > 64 or not username.isprintable():
        raise FieldError("username", "The RouterOS user the portal logs in as: 1 to 64 printable characters.")
    if not password and router.api_password is None:
        raise FieldError("password", "Enter the password of that RouterOS user.")
    if len(password) > PASSWORD_MAX or not password.isprintable():
        raise FieldError("password", f"At most {PASSWORD_MAX} printable characters.")
    if in_flight_push(router.id) is not None:
        raise Conflict("A push to this router is in progress; change its API access once it has finished.")
    moved = (router.api_address, router.api_port) != (address, settings.port)
    router.api_address, router.api_port, router.api_tls = address, settings.port, settings.tls
    router.api_username = username
    if password:
        router.api_password = password
    forget = settings.forget_certificate and router.api_fingerprint is not None
    if forget:
        router.api_fingerprint = None
    if moved or password:
        router.api_error = None
    db.session.flush()
    record("router.api.updated", actor, tenant_id=router.tenant_id, target=router,
           details={"address": address, "port": settings.port, "tls": settings.tls, "username": username,
                    "credentials": "replaced" if password else "kept",
                    "pinned_certificate": "forgotten" if forget else (router.api_fingerprint or "none yet")})
    _router_hint(router)
    return router


def remove_access(actor: Actor, router: Router) -> None:
    """Forget everything about the router's API: address, credentials, pinned certificate, facts."""
    if in_flight_push(router.id) is not None:
        raise Conflict("A push to this router is in progress; remove its API access once it has finished.")
    for column in ("api_address", "api_username", "api_password", "api_fingerprint", "api_identity", "api_version",
                   "api_board", "api_uptime", "api_peer_state", "api_checked_at", "api_error"):
        setattr(router, column, None)
    router.api_port, router.api_tls = 8729, True
    db.session.flush()
    record("router.api.removed", actor, tenant_id=router.tenant_id, target=router)
    _router_hint(router)


def _host(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return HOST_NAME.fullmatch(address) is not None and not address.replace(".", "").isdigit()
    return True


def access_for(router: Router) -> Access:
    """How a job reaches the router (the password decrypted, for this session only)."""
    return Access(host=router.api_address, port=router.api_port, tls=router.api_tls, username=router.api_username,
                  password=router.api_password or "", fingerprint=router.api_fingerprint,
                  timeout=current_app.config["PORTAL_ROUTEROS_TIMEOUT"])


def require_access(router: Router) -> None:
    if not router.has_api_access:
        raise Conflict("This router has no API access: set its address, user and password first.")


# Requests -----------------------------------------------------------------------------------------------

def request_test(actor: Actor, router: Router) -> None:
    require_access(router)
    record("router.api.test.requested", actor, tenant_id=router.tenant_id, target=router,
           details={"address": f"{router.api_address}:{router.api_port}"})


def request_push(actor: Actor, router: Router) -> RouterPush:
    """A push of the router's configuration through the API; a job does it, then waits for the handshake."""
    require_access(router)
    configuration = router.current_configuration
    if configuration is None or configuration.status not in PUSHABLE:
        state = configuration.status if configuration is not None else "missing"
        raise Conflict(f"The router's configuration is {state}: there is nothing to push.")
    return _new_push(actor, router, configuration, PushKind.PUSH)


def take_over_rotation(actor: Actor, configuration: VpnConfiguration) -> bool:
    """Called by `portal.wireguard.service.request_rotation` once the configuration is `rotating` with its next
    keys: if the router has API access and the hub reports handshakes, the rotation goes through the API (new
    peer beside the old one, new keys to the router, the new handshake, then the old peer goes; or back to the
    old keys), and the hub's batch is held off. Otherwise (False) it stays the hub-only rotation."""
    router = configuration.router
    if not router.has_api_access or not handshakes_visible(configuration.hub):
        return False
    _hold(configuration)
    push = _new_push(actor, router, configuration, PushKind.ROTATE, new_public_key=configuration.next_public_key)
    from portal.routeros.jobs import wake_after_commit  # late: the jobs build on this module

    wake_after_commit(push.id)
    return True


def _new_push(actor: Actor, router: Router, configuration: VpnConfiguration, kind: PushKind,
              new_public_key: str | None = None) -> RouterPush:
    if in_flight_push(router.id) is not None:
        raise Conflict("A push to this router is already in progress.")
    push = RouterPush(tenant_id=router.tenant_id, router_id=router.id, configuration_id=configuration.id, kind=kind,
                      step=PushStep.APPLY, status=PushStatus.PENDING, new_public_key=new_public_key)
    db.session.add(push)
    db.session.flush()
    record(f"router.{kind}.requested", actor, tenant_id=router.tenant_id, target=router,
           details={"push": push.id, "configuration_id": configuration.id,
                    "address": f"{router.api_address}:{router.api_port}",
                    **({"new_public_key": new_public_key} if new_public_key else {})})
    push_hint(push)
    return push


def _hold(configuration: VpnConfiguration) -> None:
    db.session.execute(update(VpnConfiguration).where(VpnConfiguration.id == configuration.id)
                       .values(retry_at=utcnow() + ROTATION_HOLD).execution_options(synchronize_session=False))


# Queries ------------------------------------------------------------------------------------------------

def in_flight_push(router_id: int) -> RouterPush | None:
    return db.session.scalar(select(RouterPush).where(RouterPush.router_id == router_id,
                                                      RouterPush.status.in_(list(IN_FLIGHT))))


def latest_push(router_id: int) -> RouterPush | None:
    return db.session.scalar(select(RouterPush).where(RouterPush.router_id == router_id)
                             .order_by(RouterPush.id.desc()).limit(1))


def routers_with_access() -> list[int]:
    return list(db.session.scalars(select(Router.id).where(
        Router.api_address.is_not(None), Router.api_username.is_not(None), Router.api_password.is_not(None))
        .order_by(Router.id)))


# Hints ----------------------------------------------------------------------------------------------------

def push_hint(push: RouterPush, step: str | None = None) -> None:
    live.status_changed(KIND, push.id, push.tenant_id, push.status, router_id=push.router_id)
    if step:
        live.job_step(KIND, push.id, push.tenant_id, step, router_id=push.router_id)


def _router_hint(router: Router) -> None:
    live.monitor_changed("router", router.id, router.tenant_id, router.api_error is None, router_id=router.id)
