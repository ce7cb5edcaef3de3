"""Health for load balancers and orchestrators: `/healthz` (the process answers) and `/readyz` (what it needs
answers: the database, Redis, the queue and its workers; hubs and servers are reported, not required)."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from datetime import timedelta

from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import func, select, text

from portal.errors import describe
from portal.extensions import csrf, db
from portal.jobs import queue
from portal.jobs.worker import live_workers
from portal.metrics import FleetCollector
from portal.redis_client import redis_connection
from portal.types import utcnow
from portal.wireguard.models import Hub

blueprint = Blueprint("ops", __name__)
# Loopback, RFC 1918 and IPv6 unique local addresses: where orchestrators and monitoring live.
INTERNAL_NETWORKS = tuple(ipaddress.ip_network(net) for net in (
    "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"))
csrf.exempt(blueprint)


@blueprint.get("/healthz")
def healthz():
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz():
    """200 when every required check is ok, else 503. Each check's state (and what failed) only for the
    operator: an internal client address or PORTAL_OPS_TOKEN; anyone else gets the bare status."""
    checks = {name: _run(check) for name, check in REQUIRED_CHECKS.items()}
    ready = all(check["state"] == "ok" for check in checks.values())
    status = 200 if ready else 503
    if not operator_request():
        return jsonify(status="ready" if ready else "not ready"), status
    checks["hubs"] = _run(_hubs)
    return jsonify(status="ready" if ready else "not ready", checks=checks), status


@blueprint.get("/metrics")
def metrics():
    """Prometheus metrics of the whole fleet; for the operator only (as /readyz's details)."""
    if not operator_request():
        abort(404)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(current_app._get_current_object()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def operator_request() -> bool:
    """From a loopback or private address (the orchestrator, a monitoring host inside the network), or with
    `Authorization: Bearer PORTAL_OPS_TOKEN`."""
    token = current_app.config["PORTAL_OPS_TOKEN"]
    if token and hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in INTERNAL_NETWORKS)


def _run(check: Callable[[], dict]) -> dict:
    try:
        return {"state": "ok", **check()}
    except Exception as error:
        db.session.rollback()
        return {"state": "error", "error": describe(error).splitlines()[0]}


def _database() -> dict:
    db.session.execute(text("SELECT 1"))
    return {"dialect": db.engine.dialect.name}


def _redis() -> dict:
    redis_connection().ping()
    return {}


def _queue() -> dict:
    jobs = queue()
    workers = live_workers(redis_connection())
    if not workers:
        return {"state": "error", "error": "no worker is alive (none sent a heartbeat lately)", "depth": len(jobs)}
    return {"depth": len(jobs), "workers": workers}


def _hubs() -> dict:
    """Managed hubs and how many the monitor reached lately; a hub that is down does not make the portal unready."""
    recent = utcnow() - timedelta(seconds=3 * current_app.config["PORTAL_MONITOR_INTERVAL"])
    managed = Hub.driver != "none"
    total, polled = db.session.execute(
        select(func.count(), func.count().filter((Hub.last_polled_at >= recent) & Hub.last_poll_error.is_(None)))
        .where(managed)
    ).one()
    return {"managed": total, "polled_recently": polled}


REQUIRED_CHECKS: dict[str, Callable[[], dict]] = {"database": _database, "redis": _redis, "queue": _queue}
