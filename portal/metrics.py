"""Prometheus metrics at `/metrics`, for every web process and worker on every host.

Counters and histograms are counted in memory and added to Redis hashes every FLUSH_SECONDS by a thread of
each process (never on a request's path), so any process can answer a scrape with the fleet's totals; a
Redis outage loses at most those seconds of counts. Gauges (queue depth and age, workers alive, routers per
hub) are read from the database and Redis when scraped.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections import defaultdict

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from redis.exceptions import RedisError
from sqlalchemy import func, select

from portal.redis_client import redis_connection
from portal.types import utcnow

log = logging.getLogger(__name__)
PREFIX = "portal:metrics:"
FLUSH_SECONDS = 5.0
# Seconds; from a few milliseconds (a page) to minutes (a provision waiting for a hub to come back).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
COUNTERS = {
    "http_requests": ("HTTP requests by route, method and status", ("route", "method", "status")),
    "transitions": ("Provisioning, revocation and rotation outcomes", ("action", "outcome")),
    "drift_repairs": ("Repairs of drift between a hub and the database", ("action",)),
    "login_failures": ("Wrong passwords and second-factor codes", ()),
    "download_link_uses": ("Downloads through one-time links, by kind", ("kind",)),
}
HISTOGRAMS = {
    "http_request_seconds": ("Time to answer a request, by route", ("route",)),
    "provision_seconds": ("From a configuration's creation to active", ("kind",)),
}


class Meter:
    """This process's counts since the last flush (thread-safe), and the thread that flushes them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[tuple[str, str], float] = defaultdict(float)
        self.pid: int | None = None

    def add(self, key: str, field: str, amount: float) -> None:
        with self.lock:
            self.counts[(key, field)] += amount
            if self.pid != os.getpid():  # first use in this process (gunicorn forks after import)
                self.pid = os.getpid()
                redis = redis_connection()
                threading.Thread(target=self._flush_forever, args=(redis,), name="metrics-flush", daemon=True).start()
                atexit.register(self.flush, redis, quiet=True)  # a burst worker's last counts

    def flush(self, redis, quiet: bool = False) -> None:
        """Add this process's counts to Redis; `quiet` at exit, when logging may be gone already."""
        with self.lock:
            counts, self.counts = self.counts, defaultdict(float)
        if not counts:
            return
        try:
            with redis.pipeline(transaction=False) as pipe:
                for (key, field), amount in counts.items():
                    pipe.hincrbyfloat(PREFIX + key, field, amount)
                pipe.execute()
        except RedisError as error:
            if not quiet:
                log.warning("metrics: %d counts lost (Redis: %s)", len(counts), error)

    def _flush_forever(self, redis) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush(redis)


METER = Meter()


def _labels(values: tuple) -> str:
    return json.dumps([str(value) for value in values])


def count(name: str, *labels, amount: float = 1) -> None:
    """Add to counter `name` (one of COUNTERS) with its label values in order."""
    METER.add(name, _labels(labels), amount)


def observe(name: str, seconds: float, *labels) -> None:
    """One observation of histogram `name` (one of HISTOGRAMS)."""
    series = _labels(labels)
    bucket = next((bound for bound in BUCKETS if seconds <= bound), "+Inf")
    METER.add(name, f"{series}|{bucket}", 1)
    METER.add(name, f"{series}|sum", seconds)


class FleetCollector:
    """What `/metrics` answers: the fleet's counters and histograms from Redis, gauges read now."""

    def __init__(self, app):
        self.app = app

    def collect(self):
        with self.app.app_context():
            redis = redis_connection()
            METER.flush(redis)  # this process's latest counts, so a scrape right after an event sees it
            yield from _counters(redis)
            yield from _histograms(redis)
            yield from _gauges(redis)


def _counters(redis):
    for name, (help_text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(f"portal_{name}", help_text, labels=label_names)
        for series, value in redis.hgetall(PREFIX + name).items():
            family.add_metric(json.loads(series), float(value))
        yield family


def _histograms(redis):
    for name, (help_text, label_names) in HISTOGRAMS.items():
        series: dict[str, dict[str, float]] = defaultdict(dict)
        for field, value in redis.hgetall(PREFIX + name).items():
            labels, bucket = field.decode().rsplit("|", 1) if isinstance(field, bytes) else field.rsplit("|", 1)
            series[labels][bucket] = float(value)
        family = HistogramMetricFamily(f"portal_{name}", help_text, labels=label_names)
        for labels, buckets in series.items():
            cumulative, total, points = 0.0, buckets.get("sum", 0.0), []
            for bound in (*BUCKETS, "+Inf"):
                cumulative += buckets.get(str(bound), 0.0)
                points.append((str(bound), cumulative))
            family.add_metric(json.loads(labels), points, total)
        yield family


def _gauges(redis):
    from portal.extensions import db
    from portal.jobs.worker import live_workers
    from portal.openvpn.models import VpnClient
    from portal.wireguard.models import ONLINE_WITHIN, Hub, VpnConfiguration

    workers = GaugeMetricFamily("portal_workers_alive", "Workers whose heartbeat is fresh")
    workers.add_metric([], live_workers(redis))
    yield workers
    depth = GaugeMetricFamily("portal_queue_depth", "Rows waiting for a worker", labels=["kind"])
    oldest = GaugeMetricFamily("portal_queue_oldest_seconds", "Age of the oldest waiting row", labels=["kind"])
    now = utcnow()
    for kind, model in (("wireguard", VpnConfiguration), ("openvpn", VpnClient)):
        waiting, since = db.session.execute(select(func.count(), func.min(model.updated_at))
                                            .where(model.status.in_(model.IN_FLIGHT))).one()
        depth.add_metric([kind], waiting)
        oldest.add_metric([kind], (now - since).total_seconds() if since else 0.0)
    yield depth
    yield oldest
    routers = GaugeMetricFamily("portal_routers", "Live WireGuard configurations per hub", labels=["hub", "state"])
    online_since = now - ONLINE_WITHIN
    for hub, total, online in db.session.execute(
            select(Hub.name, func.count(VpnConfiguration.id),
                   func.count(VpnConfiguration.id).filter(VpnConfiguration.last_handshake_at >= online_since))
            .join(VpnConfiguration, VpnConfiguration.hub_id == Hub.id)
            .where(VpnConfiguration.status != "revoked").group_by(Hub.name)):
        routers.add_metric([hub, "total"], total)
        routers.add_metric([hub, "online"], online)
    yield routers

