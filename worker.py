"""Run one RQ worker for the portal: `python worker.py` (as many processes as you like).

The app is built once; every job runs inside its own app context in this process (no fork per job).
The worker also enqueues the periodic jobs: the reconciler every PORTAL_RECONCILE_INTERVAL seconds and
the hub monitor every PORTAL_MONITOR_INTERVAL seconds; a Redis key per job makes sure only one worker
in the fleet enqueues it per interval.
"""

from __future__ import annotations

import argparse
import logging
import threading
from dataclasses import dataclass

from portal import create_app
from portal.jobs import enqueue, make_worker, redis_connection

log = logging.getLogger("portal.worker")


@dataclass(frozen=True)
class Periodic:
    function: str
    interval_setting: str
    description: str

    @property
    def tick_key(self) -> str:
        return f"portal:tick:{self.function}"


PERIODIC = (
    Periodic("portal.wireguard.jobs.reconcile", "PORTAL_RECONCILE_INTERVAL", "reconcile configurations and hubs"),
    Periodic("portal.wireguard.jobs.poll_hubs", "PORTAL_MONITOR_INTERVAL", "poll hubs for handshakes and traffic"),
    Periodic("portal.openvpn.jobs.reconcile_clients", "PORTAL_RECONCILE_INTERVAL", "reconcile OpenVPN clients"),
    Periodic("portal.openvpn.jobs.poll_servers", "PORTAL_MONITOR_INTERVAL", "poll OpenVPN servers for sessions"),
)


def schedule(app, periodic: Periodic, stop: threading.Event) -> None:
    interval = app.config[periodic.interval_setting]
    while not stop.wait(interval):
        try:
            with app.app_context():
                if redis_connection().set(periodic.tick_key, "1", nx=True, ex=interval):
                    enqueue(periodic.function, description=periodic.description)
        except Exception:  # Redis away for a moment: the next tick tries again
            log.exception("could not enqueue %s", periodic.function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="work until the queue is empty, then exit")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    args = parser.parse_args()

    app = create_app()
    stop = threading.Event()
    if not args.burst:
        for periodic in PERIODIC:
            threading.Thread(target=schedule, args=(app, periodic, stop), daemon=True).start()
    worker = make_worker(app, name=args.name)
    try:
        worker.work(burst=args.burst, with_scheduler=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
