"""A large tenant written straight into the database, for bench/load.py.

One tenant per call, named after its size (so that tenants of several sizes share a database), on a hub with
the `none` driver: N routers, each with a configuration (mostly active, some pending, failed or revoked, a tenth
with an older revoked one before it), traffic samples for a tenth of the active ones, N/2 OpenVPN clients on a
server of its own, and 10 x N audit events about them, hash-chained from the log's head as
`portal.audit.service.record` would chain them. Rows go in with bulk INSERTs through the models' tables, so keys
and client bundles are encrypted by the app's own column type; the tenant subnet's counter and free list match the
addresses taken, as the allocator leaves them.
"""

from __future__ import annotations

import base64
import os
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from provision import PASSWORD  # bench/ is on sys.path, as for the other bench scripts
from sqlalchemy import insert, select, update

CITIES = ("berlin", "lisbon", "oslo", "madrid", "paris", "vienna", "prague", "dublin", "warsaw", "rome",
          "athens", "sofia", "riga", "tallinn", "vilnius", "zagreb", "bern", "brussels", "helsinki", "london")
SEARCH_TERM = "berlin"  # in the name of every 20th router, at any size
HISTORY_SPAN = timedelta(days=365)
SAMPLE_EVERY = timedelta(minutes=30)
SAMPLE_SPAN = timedelta(days=1)
EVENTS_PER_ROUTER = 10
FILLER_ACTIONS = ("configuration.downloaded", "router.updated")
AUDIT_FILTER = "configuration.downloaded"  # the action the filtered audit page asks for


@dataclass(frozen=True)
class Fleet:
    """What the load generator needs to know about the seeded tenant."""

    email: str
    routers: int
    router_ids: list[int]  # spread across the tenant, each with a live configuration
    active_configuration_ids: list[int]  # spread across the tenant
    client_ids: list[int]  # spread across the tenant
    audit_events: int


def seed(app, routers: int, *, spread: int = 50, rng: random.Random | None = None) -> Fleet:
    """Write the tenant; `spread` ids of each kind, evenly spaced over the tenant, come back in the Fleet."""
    from portal.extensions import db

    rng = rng or random.Random(routers)
    with app.app_context():
        tenant_id, email = _tenant_and_admin(routers)
        now = datetime.now(UTC)
        configurations = _routers_and_configurations(tenant_id, routers, now, rng)
        clients = _clients(tenant_id, routers // 2, now, rng)
        _traffic_samples([c for c in configurations if c["status"] == "active"][::10], now, rng)
        events = _audit_events(tenant_id, configurations, clients, routers * EVENTS_PER_ROUTER, now, rng)
        db.session.commit()
        live = [c for c in configurations if c["status"] != "revoked"]
        active = [c for c in configurations if c["status"] == "active"]
        return Fleet(email=email, routers=routers, router_ids=_spaced([c["router_id"] for c in live], spread),
                     active_configuration_ids=_spaced([c["id"] for c in active], spread),
                     client_ids=_spaced([c["id"] for c in clients], spread), audit_events=events)


def analyze(app) -> None:
    """Fresh planner statistics, as autovacuum would have them on a fleet grown over months, and the bulk load's
    pages written out (a checkpoint), so that its writes do not land in the middle of the measurements."""
    from sqlalchemy import text

    from portal.extensions import db

    with app.app_context(), db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
        connection.execute(text("CHECKPOINT"))


def _spaced(values: list[int], count: int) -> list[int]:
    step = max(1, len(values) // count)
    return values[::step][:count]


def _tenant_and_admin(routers: int) -> tuple[int, str]:
    from portal.audit.service import Actor
    from portal.tenancy import service
    from portal.tenancy.models import Role

    tenant = service.create_tenant(Actor.system("bench"), f"Load bench {routers}")
    email = f"admin-{routers}@load.bench.example"
    service.create_user(Actor.system("bench"), email, PASSWORD, Role.TENANT_ADMIN, tenant.id)
    return tenant.id, email


def _statuses(count: int, rng: random.Random) -> list[str]:
    """Mostly active; 3% pending, 3% failed, 4% revoked (routers whose configuration was revoked)."""
    return rng.choices(("active", "pending", "failed", "revoked"), weights=(90, 3, 3, 4), k=count)


def _routers_and_configurations(tenant_id: int, count: int, now: datetime, rng: random.Random) -> list[dict]:
    """The routers, and their configurations with consistent addresses; the configurations as inserted."""
    from portal.extensions import db
    from portal.ipam.models import FreeAddress
    from portal.ipam.pool import FIRST_ROUTER_HOST_INDEX
    from portal.ipam.service import ensure_subnet
    from portal.wireguard.models import Router, VpnConfiguration
    from portal.wireguard.service import default_hub

    subnet = ensure_subnet(tenant_id, default_hub().id)
    created = [now - HISTORY_SPAN * (1 - index / count) for index in range(count)]
    db.session.execute(insert(Router), [
        {"tenant_id": tenant_id, "name": f"{CITIES[index % len(CITIES)]}-{index:05d}",
         "note": f"rack {index % 40}, bench router", "created_at": created[index], **_api_access(index)}
        for index in range(count)])
    router_ids = list(db.session.scalars(select(Router.id).where(Router.tenant_id == tenant_id).order_by(Router.id)))

    rows, host_index = [], FIRST_ROUTER_HOST_INDEX
    for router_id, status, made in zip(router_ids, _statuses(count, rng), created, strict=True):
        history = ["revoked"] if rng.random() < 0.1 else []
        for state in [*history, status]:
            rows.append(_configuration(tenant_id, router_id, subnet, host_index, state, made, now, rng))
            host_index += 1
    db.session.execute(insert(VpnConfiguration), rows)
    ids = db.session.scalars(select(VpnConfiguration.id).where(VpnConfiguration.tenant_id == tenant_id)
                             .order_by(VpnConfiguration.id)).all()
    for row, configuration_id in zip(rows, ids, strict=True):
        row["id"] = configuration_id
    freed = [row["host_index"] for row in rows if row["status"] == "revoked"]
    if freed:
        db.session.execute(insert(FreeAddress), [{"subnet_id": subnet.id, "host_index": i} for i in freed])
    subnet.next_host = host_index
    return rows


def _api_access(index: int) -> dict:
    """Every second router is reached over the RouterOS API, as an operator's managed routers are: an address, a
    user and a password (encrypted by the column's type, as the portal stores it)."""
    if index % 2:
        return {"api_address": None, "api_username": None, "api_password": None}
    return {"api_address": f"gw-{index:05d}.bench.example", "api_username": "portal",
            "api_password": f"bench-api-password-{index}"}


def _configuration(tenant_id: int, router_id: int, subnet, host_index: int, status: str, made: datetime,
                   now: datetime, rng: random.Random) -> dict:
    from portal.crypto import generate_keypair, generate_preshared_key
    from portal.ipam.pool import host_address

    keys, revoked = generate_keypair(), status == "revoked"
    seen = now - timedelta(seconds=rng.randrange(5, 170 if rng.random() < 0.7 else 86_400))
    return {
        "tenant_id": tenant_id, "router_id": router_id, "hub_id": subnet.hub_id, "subnet_id": subnet.id,
        "host_index": host_index, "address": str(host_address(subnet.ip_network, host_index)),
        "public_key": keys.public, "private_key": None if revoked else keys.private,
        "preshared_key": None if revoked else generate_preshared_key(), "status": status,
        "attempt": 0 if status == "pending" else 1,
        "last_error": "hub refused the peer: bench" if status == "failed" else None,
        "created_at": made, "updated_at": made, "activated_at": None if status in ("pending", "failed") else made,
        "revoked_at": made if revoked else None, "last_handshake_at": seen if status == "active" else None,
        "rx_bytes": rng.randrange(10**9) if status == "active" else 0,
        "tx_bytes": rng.randrange(10**9) if status == "active" else 0,
    }


def _clients(tenant_id: int, count: int, now: datetime, rng: random.Random) -> list[dict]:
    from portal.extensions import db
    from portal.openvpn.models import OpenVpnServer, VpnClient, new_common_name

    server = OpenVpnServer(name=f"bench-openvpn-{tenant_id}", remote_host="openvpn.bench.example", driver="ssh",
                           ssh_host="192.0.2.10")
    db.session.add(server)
    db.session.flush()
    bundle = "\n".join(f"<{block}>\n{base64.b64encode(os.urandom(900)).decode()}\n</{block}>"
                       for block in ("ca", "cert", "key", "tls-crypt"))
    rows = []
    for index, status in enumerate(_statuses(count, rng)):
        name, made = f"client-{index:05d}", now - HISTORY_SPAN * (1 - index / max(1, count))
        rows.append({"tenant_id": tenant_id, "server_id": server.id, "name": name,
                     "common_name": new_common_name(tenant_id, name), "status": status,
                     "attempt": 0 if status == "pending" else 1, "serial": f"{index + 1:032X}",
                     "not_after": made + timedelta(days=825), "bundle": bundle if status == "active" else None,
                     "connected": status == "active" and rng.random() < 0.3, "created_at": made, "updated_at": made,
                     "activated_at": made if status in ("active", "revoked") else None,
                     "revoked_at": made if status == "revoked" else None,
                     "last_error": "server script failed: bench" if status == "failed" else None})
    if rows:
        db.session.execute(insert(VpnClient), rows)
    ids = db.session.scalars(select(VpnClient.id).where(VpnClient.tenant_id == tenant_id).order_by(VpnClient.id))
    for row, client_id in zip(rows, ids, strict=True):
        row["id"] = client_id
    return rows


def _traffic_samples(configurations: list[dict], now: datetime, rng: random.Random) -> None:
    from portal.extensions import db
    from portal.wireguard.models import TrafficSample

    steps = int(SAMPLE_SPAN / SAMPLE_EVERY)
    rows = [{"configuration_id": c["id"], "taken_at": now - SAMPLE_SPAN + SAMPLE_EVERY * step,
             "rx_bytes": step * rng.randrange(10**6), "tx_bytes": step * rng.randrange(10**6)}
            for c in configurations for step in range(steps)]
    if rows:
        db.session.execute(insert(TrafficSample), rows)


def _audit_events(tenant_id: int, configurations: list[dict], clients: list[dict], total: int, now: datetime,
                  rng: random.Random) -> int:
    """`total` events about the tenant's rows, oldest first, chained from the head; how many were written."""
    from portal.audit.models import AuditEvent, AuditHead
    from portal.audit.service import HEAD_ID, event_hash
    from portal.extensions import db

    events = sorted(_lifecycle_events(configurations, clients), key=lambda event: event[0])
    active = [c for c in configurations if c["status"] == "active"] or configurations
    while len(events) < total:
        target = rng.choice(active)
        action = rng.choice(FILLER_ACTIONS)
        details = {"format": rng.choice(("rsc", "conf"))} if action == FILLER_ACTIONS[0] else {"note": "edited"}
        when = target["created_at"] + (now - target["created_at"]) * rng.random()
        events.append((when, action, "vpn_configurations", target["id"], details))
    events = sorted(events[:total], key=lambda event: event[0])

    previous = db.session.scalar(select(AuditHead.last_hash).where(AuditHead.id == HEAD_ID))
    rows = []
    for when, action, target_type, target_id, details in events:
        row = {"created_at": when, "actor_id": None, "actor_label": "bench", "impersonator_id": None,
               "tenant_id": tenant_id, "action": action, "target_type": target_type, "target_id": target_id,
               "request_id": None, "ip": None, "details": details, "prev_hash": previous}
        row["hash"] = previous = event_hash(SimpleNamespace(**row))
        rows.append(row)
    db.session.execute(insert(AuditEvent), rows)
    db.session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(last_hash=previous))
    return len(rows)


def _lifecycle_events(configurations: list[dict], clients: list[dict]):
    """What the portal would have written as these rows were made: (when, action, target type, id, details)."""
    second, routers_seen = timedelta(seconds=1), set()
    for c in configurations:
        made = c["created_at"]
        if c["router_id"] not in routers_seen:
            routers_seen.add(c["router_id"])
            yield made, "router.created", "routers", c["router_id"], {"name": "bench"}
        yield made, "configuration.created", "vpn_configurations", c["id"], {"router_id": c["router_id"],
                                                                              "address": c["address"]}
        if c["status"] != "pending":
            yield made + second, "configuration.provision.started", "vpn_configurations", c["id"], {}
            outcome = "failed" if c["status"] == "failed" else "succeeded"
            yield made + 2 * second, f"configuration.provision.{outcome}", "vpn_configurations", c["id"], {}
        if c["status"] == "revoked":
            yield made + 3 * second, "configuration.revoke.requested", "vpn_configurations", c["id"], {}
            yield made + 4 * second, "configuration.revoke.succeeded", "vpn_configurations", c["id"], {}
    for c in clients:
        yield c["created_at"], "client.created", "vpn_clients", c["id"], {"name": c["name"]}
        if c["status"] != "pending":
            yield c["created_at"] + second, "client.provision.started", "vpn_clients", c["id"], {}
