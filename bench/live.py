"""Live updates under load: many Socket.IO clients on the socket tier, an event burst from a worker process.

    .venv/bin/python bench/live.py [--clients 500] [--processes 4] [--tenants 10] [--events 40]

Starts the two tiers as production runs them (gunicorn, gthread workers, threading async mode): the page tier
(two processes, for logging in) and the socket tier (one process), on a fresh SQLite database and the
embedded Redis (or PORTAL_REDIS_URL, which is FLUSHED); logs in one admin per tenant; connects --clients
python-socketio clients (WebSocket) from --processes processes, spread evenly over the tenants; then a
separate process, built like a worker, emits --events hints to every tenant's room as fast as it can (400
by default, each about another row). Hints are coalesced per room and panel, so a client gets a few
deliveries, the last with its room's final state. Prints the deliveries, how long each hint took to reach
each client (from its emit to the first delivery that covers it, same clock) p50/p95/p99, how long the last
state took, and the socket process's CPU and resident memory per connected client.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from portal.devserver import free_port, start_embedded_redis, stop  # noqa: E402

PASSWORD = "bench password 1234"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def prepare(tenants: int) -> list[tuple[int, str]]:
    """Migrate, then one tenant admin per tenant: [(tenant id, e-mail)]."""
    from flask_migrate import upgrade

    from portal import create_app
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    app = create_app()
    admins = []
    with app.app_context():
        upgrade()
        for index in range(tenants):
            tenant = service.create_tenant(Actor.system("bench"), f"Bench tenant {index}")
            email = f"admin{index}@bench.example"
            service.create_user(Actor.system("bench"), email, PASSWORD, Role.TENANT_ADMIN, tenant.id)
            admins.append((tenant.id, email))
        db.session.commit()
    return admins


def log_in(base_url: str, email: str) -> str:
    import re

    import requests

    with requests.Session() as http:
        page = http.get(f"{base_url}/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
        response = http.post(f"{base_url}/login", data={"email": email, "password": PASSWORD, "csrf_token": token},
                             allow_redirects=False)
        assert response.status_code == 302, response.text
        return "; ".join(f"{name}={value}" for name, value in http.cookies.items())


def clients_process(base_url: str, cookies: list[str], events: int, ready, go, results) -> None:
    """Connect one client per cookie, say ready, then record the latency of every hint until all arrived."""
    import threading

    import socketio

    probes: list[float] = []
    deliveries: list[tuple[int, list[tuple[int, float]]]] = []  # per client: its room, [(last id, received)]
    lock = threading.Lock()
    done = threading.Event()
    clients = []
    finished = 0

    def recorder(received: list[tuple[int, float]]):
        def on_event(event, data):
            nonlocal finished
            now = time.time()
            with lock:
                if data["id"] < 0:
                    probes.append(now - data["at"])
                    return
                received.append((data["id"], now))
                if data["id"] == events - 1:
                    finished += 1
                    if finished == len(clients):
                        done.set()
        return on_event

    failed = 0
    for tenant_id, cookie in cookies:
        client = socketio.Client(reconnection=False)
        received: list[tuple[int, float]] = []
        client.on("*", recorder(received))
        try:
            client.connect(base_url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=30)
            clients.append(client)
            deliveries.append((tenant_id, received))
        except Exception:
            failed += 1
    ready.put((len(clients), failed))
    go.wait()
    done.wait(timeout=120)
    with lock:
        results.put((list(probes), [(room, list(received)) for room, received in deliveries]))
    for client in clients:
        client.disconnect()


def burst_process(rooms: list[int], events: int, sent) -> None:
    """Built like a worker (create_app, no web server): emit `events` hints to each tenant room; sends back
    how long that took and when each hint left: {room: [time of hint 0, 1, ...]}."""
    from portal import create_app
    from portal.live import emit_now, tenant_room

    app = create_app()
    with app.app_context():
        for tenant_id in rooms:  # first a lone hint per room, one at a time: latency without a queue
            emit_now("status", tenant_room(tenant_id), {"kind": "bench", "id": -1, "status": "probe"})
            time.sleep(0.2)
        time.sleep(1)
        started = time.perf_counter()
        emitted: dict[int, list[float]] = {tenant_id: [] for tenant_id in rooms}
        for index in range(events):
            for tenant_id in rooms:
                emitted[tenant_id].append(time.time())
                emit_now("status", tenant_room(tenant_id), {"kind": "bench", "id": index, "status": "active"})
        sent.put((time.perf_counter() - started, emitted))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def hint_latencies(received: list[tuple[int, float]], emitted: list[float]) -> list[float]:
    """For each hint a client's room was sent: from its emit to the first delivery that covers it (one with
    its id or a later one: a delivery stands for every hint before it in its window)."""
    latencies, deliveries = [], iter(sorted(received, key=lambda delivery: delivery[1]))
    last_id, at = -1, 0.0
    for index, emitted_at in enumerate(emitted):
        while last_id < index:
            last_id, at = next(deliveries, (len(emitted), float("inf")))
        latencies.append(at - emitted_at)
    return latencies


def summary(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.50) * 1000:.1f} ms, p95 {percentile(values, 0.95) * 1000:.1f} ms, "
            f"p99 {percentile(values, 0.99) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms")


def gunicorn(app: str, port: int, workers: int, threads: int, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
         "--workers", str(workers), "--threads", str(threads), "--log-level", "warning", app],
        cwd=ROOT, stderr=log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--events", type=int, default=40, help="hints per tenant room in the burst")
    parser.add_argument("--threads", type=int, default=0, help="gunicorn threads (default: clients + 64)")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")

    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-live-"))
        os.environ.setdefault("PORTAL_DATABASE_URL", f"sqlite:///{workdir}/live.db")
        if os.environ.get("PORTAL_REDIS_URL"):
            from redis import Redis

            Redis.from_url(os.environ["PORTAL_REDIS_URL"]).flushdb()
        else:
            os.environ["PORTAL_REDIS_URL"] = start_embedded_redis(stack)
        os.environ.update({"PORTAL_ENV": "testing", "PORTAL_LOGIN_MAX_FAILURES": "1000"})
        admins = prepare(args.tenants)

        page_port, socket_port = free_port(), free_port()
        threads = args.threads or args.clients + 64
        log = stack.enter_context(open(f"{workdir}/web.log", "w"))  # noqa: SIM115
        pages = gunicorn("portal.live.tiers:page_tier()", page_port, 2, 4, log)
        stack.callback(stop, pages)
        web = gunicorn("portal.live.tiers:socket_tier()", socket_port, 1, threads, log)
        stack.callback(stop, web)
        base_url = f"http://127.0.0.1:{socket_port}"
        cookies_by_tenant = {}
        deadline = time.monotonic() + 60
        while not cookies_by_tenant:
            try:
                cookies_by_tenant = {tenant_id: log_in(f"http://127.0.0.1:{page_port}", email)
                                     for tenant_id, email in admins}
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        web_pid = int(subprocess.check_output(["pgrep", "-P", str(web.pid)]).split()[0])  # gunicorn's worker
        baseline = rss_kib(web_pid)

        tenant_ids = list(cookies_by_tenant)
        cookies = [(tenant_ids[i % len(tenant_ids)], cookies_by_tenant[tenant_ids[i % len(tenant_ids)]])
                   for i in range(args.clients)]
        shares = [cookies[i::args.processes] for i in range(args.processes)]
        ready, results, sent, go = context.Queue(), context.Queue(), context.Queue(), context.Event()
        started = time.perf_counter()
        processes = [context.Process(target=clients_process, args=(base_url, share, args.events, ready, go, results))
                     for share in shares]
        for process in processes:
            process.start()
        connected = failed = 0
        for _ in processes:
            ok, bad = ready.get(timeout=300)
            connected, failed = connected + ok, failed + bad
        connect_seconds = time.perf_counter() - started
        time.sleep(1)  # let the web process settle before measuring it
        loaded = rss_kib(web_pid)

        web_cpu = cpu_seconds(web_pid)
        go.set()
        burst = context.Process(target=burst_process, args=(tenant_ids, args.events, sent))
        burst.start()
        emit_seconds, emitted = sent.get(timeout=120)
        collected = [results.get(timeout=180) for _ in processes]
        probes = [value for probe, _ in collected for value in probe]
        clients = [client for _, process_clients in collected for client in process_clients]
        web_cpu = cpu_seconds(web_pid) - web_cpu
        burst.join()
        for process in processes:
            process.join(timeout=60)
        stop(web)
        tracebacks = Path(f"{workdir}/web.log").read_text().count("Traceback")

    deliveries = sum(len(received) for _, received in clients)
    final = sum(1 for _, received in clients if any(last == args.events - 1 for last, _ in received))
    latencies = [value for room, received in clients for value in hint_latencies(received, emitted[room])]
    last_state = [at - emitted[room][-1] for room, received in clients for last, at in received
                  if last == args.events - 1]
    print(f"live: {connected} clients connected ({failed} failed) in {connect_seconds:.1f} s from "
          f"{args.processes} processes, {args.tenants} tenant rooms, the socket tier: one gunicorn gthread process "
          f"({threads} threads)")
    print(f"burst: {args.events * len(tenant_ids)} hints from a worker process in {emit_seconds * 1000:.0f} ms; "
          f"{deliveries} deliveries ({connected * args.events} hints to clients), {final} of {connected} clients "
          f"got their room's last state")
    if probes:
        print(f"lone hint (one per room, {len(probes)} deliveries): p50 {percentile(probes, 0.50) * 1000:.1f} ms, "
              f"p95 {percentile(probes, 0.95) * 1000:.1f} ms, max {max(probes) * 1000:.1f} ms")
    if latencies:
        print(f"each hint, emit -> the delivery that covers it: {summary(latencies)} "
              f"(mean {statistics.fmean(latencies) * 1000:.1f} ms)")
    if last_state:
        print(f"last state, its emit -> client: {summary(last_state)}")
    print(f"socket process CPU for the burst: {web_cpu:.2f} s, {web_cpu / max(deliveries, 1) * 1e6:.0f} µs per "
          f"delivery ({os.cpu_count()} CPUs shared with the client processes, Redis and the emitter)")
    if tracebacks:
        print(f"note: the web processes logged {tracebacks} traceback(s), see python-engineio's writer thread closing "
              "a WebSocket that gunicorn had already closed when clients left")
    print(f"socket process memory: {baseline / 1024:.1f} MiB before, {loaded / 1024:.1f} MiB with {connected} clients: "
          f"{(loaded - baseline) / max(connected, 1):.0f} KiB per connected client")


if __name__ == "__main__":
    main()
