"""Two versions of the page tier in turns on this machine: how much less CPU a request costs, and how many more
requests per second are served, with the code of this checkout than with an earlier commit.

    .venv/bin/python bench/compare.py BASE [--routers 10000] [--rounds 7] [--clients 16] [--seconds 15]

A VM's speed moves by tens of percent within an hour, so figures of different runs do not compare; turns do.
BASE (a commit, tag or branch) is checked out in a temporary git worktree. One database is seeded as
bench/load.py seeds it (one tenant of --routers routers; the two versions must share the schema, so their
migrations must be the same), then each round serves it with BASE's code and with this checkout's, one after
the other (which one first alternates), each to --clients clients sending the page mix back to back for
--seconds s after a warm-up. Each line gives requests/s and the CPU of the whole machine per request (the page
tier, PostgreSQL and the load: what a faster version saves in all); the summary gives this checkout's figures
as ratios to BASE's, per round, with their mean.

Database and Redis: as bench/load.py (--database-url, default its own bench database, WIPED; --redis-url).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (bench/load.py: the page mix, the web tier, the load processes)
import provision  # noqa: E402
import seed  # noqa: E402
from redis import Redis  # noqa: E402


@dataclass(frozen=True)
class Turn:
    rps: float
    machine_ms: float  # CPU of the whole machine per request


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the earlier commit to compare with")
    parser.add_argument("--routers", type=int, default=10_000, help="tenant size (default 10000)")
    parser.add_argument("--rounds", type=int, default=7, help="turns of each version (default 7)")
    parser.add_argument("--clients", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per turn (default 15)")
    parser.add_argument("--database-url", default=os.environ.get("PORTAL_DATABASE_URL") or load.DEFAULT_DATABASE_URL,
                        help="PostgreSQL database to wipe and use (default %(default)s)")
    parser.add_argument("--redis-url", default=os.environ.get("PORTAL_REDIS_URL"),
                        help="Redis database to flush and use (default an embedded one)")
    parser.add_argument("--force", action="store_true", help="wipe a database whose name lacks 'bench'")
    return parser.parse_args()


def worktree(stack: ExitStack, base: str) -> Path:
    """BASE checked out beside this checkout, removed afterwards; refused if its migrations differ."""
    path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="portal-compare-"))) / "base"
    git = ["git", "-C", str(provision.ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(path), base], check=True)
    stack.callback(subprocess.run, [*git, "worktree", "remove", "--force", str(path)], check=False)
    ours, theirs = (sorted(p.name for p in (root / "migrations" / "versions").glob("*.py"))
                    for root in (provision.ROOT, path))
    if ours != theirs:
        raise SystemExit(f"{base} has other migrations than this checkout: one database cannot serve both")
    return path


def seed_tenant(args: argparse.Namespace, database_url: str, redis: str) -> tuple[seed.Fleet, int]:
    """The tenant, and its routers list's last page."""
    provision.reset_database(database_url, args.force)
    Redis.from_url(redis).flushdb()
    load.migrate()
    app = load.create_app()
    fleet = seed.seed(app, args.routers)
    seed.analyze(app)
    return fleet, math.ceil(fleet.routers / app.config["PORTAL_PAGE_SIZE"])


def turn(args: argparse.Namespace, traffic: load.LoadProcesses, fleet: seed.Fleet, last_page: int,
         root: Path) -> Turn:
    """One version served for one turn: its requests/s and machine CPU per request."""
    workers, threads = load.gunicorn_conf.workers, load.gunicorn_conf.threads
    with ExitStack() as stack:
        address, server_pids = load.start_gunicorn(stack, workers, threads, root=root)
        target = load.Target(address, load.sign_in(address, fleet.email), fleet, last_page)
        load.warm_up(traffic, target, workers, threads)
        sent, cpu = load.measure_cpu(traffic.pids, server_pids,
                                     lambda: load.closed_loop(traffic, target, args.clients, args.seconds))
    served = sum(status == 200 for _, _, status in sent.outcomes)
    if served < len(sent.outcomes):
        raise SystemExit(f"{len(sent.outcomes) - served} requests not answered 200 by {root}")
    machine_seconds = cpu.machine_busy * (os.cpu_count() or 1) * cpu.wall
    return Turn(served / args.seconds, machine_seconds / served * 1000)


def main() -> None:
    args = parse_args()
    database_url = provision.psycopg_url(args.database_url)
    ratios: list[tuple[float, float]] = []
    with ExitStack() as stack:
        base = worktree(stack, args.base)
        redis = provision.redis_url(stack, args.redis_url)
        load.configure_environment(database_url, redis)
        traffic = load.LoadProcesses(stack, 2)
        fleet, last_page = seed_tenant(args, database_url, redis)
        print(f"{args.routers:,} routers, {args.clients} clients, {args.seconds:.0f} s a turn; Python reference "
              f"loop {load.python_speed() * 1000:.0f} ms", flush=True)
        for number in range(args.rounds):
            order = [("base", base), ("this", provision.ROOT)]
            if number % 2:
                order.reverse()
            turns = {name: turn(args, traffic, fleet, last_page, root) for name, root in order}
            for name in ("base", "this"):
                print(f"  round {number + 1} {name}: {turns[name].rps:6.1f} req/s, "
                      f"{turns[name].machine_ms:5.2f} ms of machine CPU a request", flush=True)
            ratios.append((turns["this"].rps / turns["base"].rps, turns["this"].machine_ms / turns["base"].machine_ms))
    print(f"\nthis checkout / {args.base}, per round:")
    print("  requests/s:          " + " ".join(f"{rps:.2f}" for rps, _ in ratios)
          + f"   mean {sum(r for r, _ in ratios) / len(ratios):.2f}")
    print("  machine CPU/request: " + " ".join(f"{cpu:.2f}" for _, cpu in ratios)
          + f"   mean {sum(c for _, c in ratios) / len(ratios):.2f}")


if __name__ == "__main__":
    main()
