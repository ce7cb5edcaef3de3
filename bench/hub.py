"""Provisioning through a real lab hub (root): end-to-end rate, SSH round trips, poll time, batch curve.

    sudo .venv/bin/python bench/hub.py [--routers 1000]

Builds the WireGuard lab of tests/lab/ (wireguard-go hub, private sshd), adds the hub to a fresh
SQLite database with an embedded Redis (or PORTAL_DATABASE_URL / PORTAL_REDIS_URL, which are WIPED),
then:
- provisions N routers through the portal's jobs (one RQ worker in this process, burst mode) and prints
  provisions per second and SSH commands per provisioning (counted at the SSH session);
- times one monitoring poll (`wg show dump` over SSH, parsed and written) with N peers on the hub;
- applies batches of 1, 10, 50 and N peers with the driver (one `wg set` per SSH call) and prints the
  time per peer as the batch grows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from portal import ssh  # noqa: E402
from portal.crypto import generate_keypair, generate_preshared_key  # noqa: E402
from portal.devserver import start_embedded_redis  # noqa: E402
from tests.lab import Lab, lab_missing  # noqa: E402

BATCHES = (1, 10, 50)


class CountingSession(ssh.SshSession):
    commands = 0

    def run(self, *args, **kwargs):
        CountingSession.commands += 1
        return super().run(*args, **kwargs)


def build_app(stack: ExitStack):
    from flask_migrate import upgrade
    from redis import Redis

    from portal import create_app

    if not os.environ.get("PORTAL_DATABASE_URL"):
        os.environ["PORTAL_DATABASE_URL"] = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/b.db"
    if os.environ.get("PORTAL_REDIS_URL"):
        Redis.from_url(os.environ["PORTAL_REDIS_URL"]).flushdb()
    else:
        os.environ["PORTAL_REDIS_URL"] = start_embedded_redis(stack)
    os.environ.update({"PORTAL_ENV": "testing", "PORTAL_JOB_RETRY_INTERVALS": ""})
    app = create_app()
    with app.app_context():
        upgrade()
    return app


def lab_hub_and_tenant(app, lab: Lab) -> tuple[int, int]:
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy.service import create_tenant
    from portal.wireguard import hubs

    actor = Actor.system("bench")
    with app.app_context():
        hub = hubs.save_hub(actor, lab.hub_settings("bench hub"))
        tenant = create_tenant(actor, "Bench ISP")
        hubs.place_tenant(actor, tenant.id, hub)
        hubs.bootstrap(actor, hub)
        db.session.commit()
        return hub.id, tenant.id


def provision(app, tenant_id: int, count: int) -> tuple[float, int]:
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.jobs.worker import make_worker
    from portal.wireguard import jobs, service

    with app.app_context():
        routers = [service.add_router(Actor.system("bench"), tenant_id, f"bench-{index}") for index in range(count)]
        hub_id = routers[0].current_configuration.hub_id
        db.session.commit()
    CountingSession.commands = 0
    started = time.perf_counter()
    with app.app_context():
        jobs.sync_hub.enqueue(hub_id)
    make_worker(app).work(burst=True)
    return time.perf_counter() - started, CountingSession.commands


def time_poll(app) -> float:
    from portal.wireguard.jobs import poll_hubs

    with app.app_context():
        started = time.perf_counter()
        poll_hubs()
        return time.perf_counter() - started


def batch_curve(app, hub_id: int, sizes: list[int]) -> list[tuple[int, float]]:
    from portal.extensions import db
    from portal.wireguard.drivers import driver_for
    from portal.wireguard.models import Hub
    from portal.wireguard.wgtext import Peer

    curve = []
    with app.app_context():
        hub = db.session.get(Hub, hub_id)
        driver = driver_for(hub)
        for size in sizes:
            peers = [Peer(generate_keypair().public, generate_preshared_key(), (f"10.250.{i // 250}.{i % 250 + 1}/32",))
                     for i in range(size)]
            started = time.perf_counter()
            driver.apply_peers(hub, apply=peers)
            elapsed = time.perf_counter() - started
            driver.apply_peers(hub, remove=[peer.public_key for peer in peers])
            curve.append((size, elapsed))
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, default=1000)
    args = parser.parse_args()
    missing = lab_missing()
    if missing:
        sys.exit(f"bench/hub.py needs the namespace lab: {missing}")
    ssh.SshSession = CountingSession  # count every command the driver sends
    with ExitStack() as stack:
        app = build_app(stack)
        lab = stack.enter_context(Lab())
        hub_id, tenant_id = lab_hub_and_tenant(app, lab)
        elapsed, commands = provision(app, tenant_id, args.routers)
        print(f"provision {args.routers} routers through the jobs (1 worker, lab hub over SSH): "
              f"{args.routers / elapsed:.1f} provisions/s, {commands / args.routers:.2f} SSH commands each")
        print(f"one monitoring poll with {args.routers} peers on the hub: {time_poll(app) * 1000:.1f} ms")
        print("peers applied per SSH call -> ms per peer:")
        for size, elapsed in batch_curve(app, hub_id, [*BATCHES, args.routers]):
            print(f"  {size:4d} peers: {elapsed * 1000:8.1f} ms in all, {elapsed * 1000 / size:6.2f} ms per peer")


if __name__ == "__main__":
    main()
