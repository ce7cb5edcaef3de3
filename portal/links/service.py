"""Download links: creating them (e-mailed, or for the router one-liner), using them once, revoking them.

A link carries a random 32-byte token (256 bits, `secrets.token_urlsafe(32)`); the database keeps its SHA-256
only, so neither a database dump nor the audit log can download anything. Looking a link up never uses it (a
GET, which mail scanners send too); using it is a compare-and-set (`UPDATE ... WHERE used_at IS NULL AND
revoked_at IS NULL AND expires_at > now`), so of any number of racing requests exactly one gets the file. The
file comes from `portal.downloads`, like every other download, and is audited there as well as here.

Revoking a configuration or client, or rotating a configuration's keys, revokes its open links
(`revoke_open_links`, called by the WireGuard and OpenVPN services in the same transaction).

Failed lookups (unknown, used, expired or revoked tokens) are counted per client address in Redis; past
PORTAL_LINK_MAX_FAILURES in a window, that address waits. Without Redis, lookups go on unthrottled (logged).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import and_, or_, select, update

from portal import live, mail, metrics
from portal.audit.service import Actor, record
from portal.downloads import WIREGUARD_KINDS, File, NotDownloadable, openvpn_file, wireguard_file
from portal.errors import Conflict, DomainError, FieldError
from portal.extensions import db
from portal.links.models import FILES, DownloadLink, LinkKind, LinkState
from portal.openvpn.models import KIND as CLIENT_KIND
from portal.openvpn.models import VpnClient
from portal.redis_client import redis_connection
from portal.types import utcnow
from portal.wireguard.models import KIND as CONFIGURATION_KIND
from portal.wireguard.models import Status, VpnConfiguration

log = logging.getLogger(__name__)

TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{20,100}")
# Why links stopped working, as the audit log and the link's page say it.
CONFIGURATION_REVOKED = "the router's configuration was revoked"
KEYS_ROTATED = "the router's keys were rotated"
CLIENT_REVOKED = "the OpenVPN client was revoked"
REVOKED_BY_ADMIN = "an administrator revoked it"
REPLACED = "a newer router command replaced it"

Target = VpnConfiguration | VpnClient
# Builds the absolute URL of a link from its kind and token (views pass `url_for`; services never read the request).
UrlBuilder = Callable[[str, str], str]


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, _hash(token)


def _target_columns(target: Target) -> dict:
    if isinstance(target, VpnConfiguration):
        return {"configuration_id": target.id}
    return {"client_id": target.id}


def _locked_target(target: Target) -> Target:
    """The target read again under a row lock: a revocation or rotation committing meanwhile waits for this
    transaction, and then revokes the link made here (PostgreSQL; SQLite runs one writer at a time anyway)."""
    model = type(target)
    return db.session.execute(select(model).where(model.id == target.id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one()


def _check_linkable(target: Target) -> None:
    if isinstance(target, VpnConfiguration):
        if target.status != Status.ACTIVE or not target.downloadable:
            raise Conflict("Links can be made for an active configuration only.")
    elif not target.downloadable:
        raise Conflict("Links can be made for an active client only.")


def _details(link: DownloadLink) -> dict:
    """What the audit log says about a link: never its token or hash."""
    details = {"kind": link.kind, "file": link.file_format, "expires_at": link.expires_at.isoformat(timespec="seconds")}
    if link.recipient:
        details["recipient"] = link.recipient
    details.update({key: value for key, value in (("configuration_id", link.configuration_id),
                                                  ("client_id", link.client_id)) if value is not None})
    return details


# Creating ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sent:
    """An e-mailed link: `outbox` is the `.eml` written when no mail server is set."""

    link: DownloadLink
    recipient: str
    outbox: Path | None


def check_hours(hours: int | None) -> int:
    longest = current_app.config["PORTAL_LINK_MAX_HOURS"]
    if hours is None or hours < 1 or hours > longest:
        days = f" ({longest // 24} days)" if longest % 24 == 0 else ""
        raise FieldError("hours", f"A link works for 1 to {longest} hours{days}; choose a number in that range.")
    return hours


def create_email_link(actor: Actor, target: Target, recipient: str, hours: int, file_format: str,
                      url: UrlBuilder) -> Sent:
    """A one-time link to the target's file, e-mailed to `recipient`, working `hours` hours. A mail failure
    raises (MailError), so the caller's rollback leaves no link behind."""
    recipient = (recipient or "").strip()
    if not mail.is_address(recipient):
        raise FieldError("recipient", "Enter a valid e-mail address.")
    hours = check_hours(hours)
    if isinstance(target, VpnConfiguration):
        if file_format not in WIREGUARD_KINDS:
            raise FieldError("file_format", "Choose the RouterOS script or the wg-quick config.")
    else:
        file_format = "ovpn"
    target = _locked_target(target)
    _check_linkable(target)
    token, token_hash = _new_token()
    now = utcnow()
    link = DownloadLink(kind=LinkKind.EMAIL, token_hash=token_hash, tenant_id=target.tenant_id,
                        file_format=file_format, created_by_id=actor.user_id, recipient=recipient, created_at=now,
                        expires_at=now + timedelta(hours=hours), **_target_columns(target))
    db.session.add(link)
    db.session.flush()
    record("link.created", actor, tenant_id=link.tenant_id, target=link, details=_details(link))
    outbox = mail.send_template(
        recipient, f"Your VPN configuration: {link.target_label}", "download_link", link=url("email", token),
        hours=hours, expires_at=link.expires_at, sender=actor.label, tenant=link.tenant.name,
        target=link.target_label, file=FILES[file_format])
    return Sent(link, recipient, outbox)


@dataclass(frozen=True)
class RouterCommand:
    link: DownloadLink
    url: str

    @property
    def command(self) -> str:
        return router_command(self.url)


def router_command(url: str) -> str:
    """The one line a MikroTik admin pastes into the router's terminal: fetch the script once, then import it."""
    if '"' in url or "\\" in url or "$" in url:  # RouterOS string syntax; a URL of ours never has them
        raise ValueError(f"not a URL RouterOS can quote: {url!r}")
    return f'/tool fetch url="{url}" dst-path=vpn-portal.rsc; /import file-name=vpn-portal.rsc'


def create_router_fetch_link(actor: Actor, configuration: VpnConfiguration, url: UrlBuilder) -> RouterCommand:
    """A link the router fetches once, for PORTAL_ROUTER_FETCH_MINUTES, bound to this configuration's `.rsc`.
    The configuration's older open router links stop working (one command is current at a time)."""
    configuration = _locked_target(configuration)
    _check_linkable(configuration)
    revoke_open_links(actor, configuration_id=configuration.id, reason=REPLACED, kind=LinkKind.ROUTER_FETCH)
    token, token_hash = _new_token()
    now = utcnow()
    link = DownloadLink(kind=LinkKind.ROUTER_FETCH, token_hash=token_hash, tenant_id=configuration.tenant_id,
                        configuration_id=configuration.id, file_format="rsc", created_by_id=actor.user_id,
                        created_at=now,
                        expires_at=now + timedelta(minutes=current_app.config["PORTAL_ROUTER_FETCH_MINUTES"]))
    db.session.add(link)
    db.session.flush()
    record("link.created", actor, tenant_id=link.tenant_id, target=link, details=_details(link))
    return RouterCommand(link, url("router_fetch", token))


# Using ------------------------------------------------------------------------------------------

class UnknownLink(DomainError):
    """No such link (a 404)."""

    code = "not_found"


GONE_MESSAGES = {
    LinkState.USED: "This link has been used already: each link downloads its file once. If that was not you, "
                    "tell the administrator who sent it.",
    LinkState.EXPIRED: "This link has expired. Ask the administrator who sent it for a new one.",
    LinkState.REVOKED: "This link was revoked: {reason}. Ask the administrator who sent it for a new one.",
}


class LinkGone(Conflict):
    """The link was used, has expired or was revoked (a 410 page saying which)."""

    code = "gone"

    def __init__(self, link: DownloadLink, state: LinkState):
        message = GONE_MESSAGES[state].format(reason=link.revoked_reason or REVOKED_BY_ADMIN)
        super().__init__(message)
        self.link, self.state = link, state


def find_link(token: str, kind: LinkKind) -> DownloadLink | None:
    """The link of that kind with that token, without using it; None if there is none."""
    if not TOKEN_SHAPE.fullmatch(token or ""):
        return None
    return db.session.scalar(select(DownloadLink).where(DownloadLink.token_hash == _hash(token),
                                                        DownloadLink.kind == kind))


def open_link(token: str, kind: LinkKind) -> DownloadLink:
    """The link if it still works; UnknownLink or LinkGone otherwise. Uses nothing."""
    link = find_link(token, kind)
    if link is None:
        raise UnknownLink("This link is not valid. Check that you copied all of it.")
    state = link.state(utcnow())
    if state is not LinkState.OPEN:
        raise LinkGone(link, state)
    return link


def link_actor(link: DownloadLink, ip: str | None, request_id: str | None) -> Actor:
    """Who uses a link, as the audit log records it: the link itself (nobody signs in), from an address."""
    label = (f"download link {link.id} ({link.recipient})" if link.kind == LinkKind.EMAIL
             else f"router fetch link {link.id}")
    return Actor(user_id=None, label=label, request_id=request_id, ip=ip)


def use_link(token: str, kind: LinkKind, ip: str | None, request_id: str | None) -> File:
    """Use the link up and return its file (in the caller's transaction: the caller commits, and a rollback
    leaves the link unused). UnknownLink, LinkGone, or NotDownloadable when its target cannot be downloaded."""
    link = open_link(token, kind)
    now = utcnow()
    used = db.session.execute(
        update(DownloadLink).where(DownloadLink.id == link.id, DownloadLink.used_at.is_(None),
                                   DownloadLink.revoked_at.is_(None), DownloadLink.expires_at > now)
        .values(used_at=now, used_ip=ip).execution_options(synchronize_session=False))
    db.session.refresh(link)
    if used.rowcount != 1:  # used, revoked or expired a moment ago
        raise LinkGone(link, link.state(now) if link.state(now) is not LinkState.OPEN else LinkState.USED)
    actor = link_actor(link, ip, request_id)
    if link.configuration_id is not None:
        configuration = link.configuration
        if configuration.status != Status.ACTIVE:  # revoking or re-keying revoked the link; this is a second check
            raise NotDownloadable("This configuration is being revoked or getting new keys: it cannot be downloaded.")
        file = wireguard_file(actor, configuration, link.file_format)
        live.job_step(CONFIGURATION_KIND, configuration.id, link.tenant_id, "link.used",
                      router_id=configuration.router_id)
    else:
        file = openvpn_file(actor, link.client)
        live.job_step(CLIENT_KIND, link.client_id, link.tenant_id, "link.used")
    record("link.used", actor, tenant_id=link.tenant_id, target=link, details=_details(link))
    metrics.count("download_link_uses", link.kind)
    return file


# Revoking ---------------------------------------------------------------------------------------

def revoke_link(actor: Actor, link: DownloadLink) -> None:
    """An admin's Revoke button: the link stops working."""
    if revoke_open_links(actor, link_id=link.id, reason=REVOKED_BY_ADMIN) != 1:
        db.session.refresh(link)
        state = link.state(utcnow())
        raise Conflict(f"This link is {state.value} already; there is nothing to revoke.")


def revoke_open_links(actor: Actor, *, configuration_id: int | None = None, client_id: int | None = None,
                      link_id: int | None = None, reason: str, kind: LinkKind | None = None) -> int:
    """Revoke every open link of a configuration or client (or the one link), each audited once as
    `link.revoked` with the reason; how many. In the caller's transaction."""
    if (configuration_id, client_id, link_id).count(None) != 2:
        raise ValueError("name exactly one of configuration_id, client_id and link_id")
    now = utcnow()
    query = select(DownloadLink).where(DownloadLink.used_at.is_(None), DownloadLink.revoked_at.is_(None),
                                       DownloadLink.expires_at > now)
    if configuration_id is not None:
        query = query.where(DownloadLink.configuration_id == configuration_id)
    elif client_id is not None:
        query = query.where(DownloadLink.client_id == client_id)
    else:
        query = query.where(DownloadLink.id == link_id)
    if kind is not None:
        query = query.where(DownloadLink.kind == kind)
    # Locked: a use racing this waits, and then finds the link revoked (its compare-and-set matches nothing).
    links = db.session.scalars(query.order_by(DownloadLink.id).with_for_update()
                               .execution_options(populate_existing=True)).all()
    for link in links:
        link.revoked_at, link.revoked_reason = now, reason
    db.session.flush()
    for link in links:
        details = {"reason": reason, "kind": link.kind, "file": link.file_format}
        if link.recipient:
            details["recipient"] = link.recipient
        record("link.revoked", actor, tenant_id=link.tenant_id, target=link, details=details)
    return len(links)


# Queries ----------------------------------------------------------------------------------------

RECENTLY_USED = 5


@dataclass(frozen=True)
class Listing:
    open: list[DownloadLink]
    used: list[DownloadLink]  # the last few, newest first: when, and from which address


def links_of(target: Target, now: datetime | None = None) -> Listing:
    """The target's open links, soonest to expire first, and its last few used ones, in one statement."""
    now = now or utcnow()
    column = DownloadLink.configuration_id if isinstance(target, VpnConfiguration) else DownloadLink.client_id
    recently_used = (select(DownloadLink.id).where(column == target.id, DownloadLink.used_at.is_not(None))
                     .order_by(DownloadLink.used_at.desc(), DownloadLink.id.desc()).limit(RECENTLY_USED))
    still_open = and_(DownloadLink.used_at.is_(None), DownloadLink.revoked_at.is_(None), DownloadLink.expires_at > now)
    links = db.session.scalars(select(DownloadLink).where(
        column == target.id, or_(still_open, DownloadLink.id.in_(recently_used)))).all()
    open_links = sorted((link for link in links if link.used_at is None), key=lambda link: (link.expires_at, link.id))
    used = sorted((link for link in links if link.used_at is not None), key=lambda link: (link.used_at, link.id),
                  reverse=True)
    return Listing(open_links, used)


# Throttling failed lookups ----------------------------------------------------------------------

FAILURE_WINDOW = 15 * 60  # seconds


def _failures_key(ip: str) -> str:
    return f"portal:link-failures:{ip}"


def lookup_wait(ip: str) -> int:
    """Seconds until `ip` may look links up again (it failed too often), or 0."""
    try:
        redis = redis_connection()
        with redis.pipeline(transaction=False) as pipe:
            pipe.get(_failures_key(ip))
            pipe.ttl(_failures_key(ip))
            failures, ttl = pipe.execute()
    except (RedisError, RuntimeError) as error:
        log.warning("link lookup throttling unavailable (Redis: %s); the lookup goes on unthrottled", error)
        return 0
    if int(failures or 0) >= current_app.config["PORTAL_LINK_MAX_FAILURES"]:
        return max(1, ttl)
    return 0


def count_failed_lookup(ip: str) -> None:
    """An unknown, used, expired or revoked token asked for from `ip` (a window from its first failure)."""
    try:
        with redis_connection().pipeline() as pipe:
            pipe.set(_failures_key(ip), 0, ex=FAILURE_WINDOW, nx=True)
            pipe.incr(_failures_key(ip))
            pipe.execute()
    except (RedisError, RuntimeError) as error:
        log.warning("could not count a failed link lookup (Redis: %s)", error)


def wait_minutes(seconds: int) -> int:
    return max(1, math.ceil(seconds / 60))
