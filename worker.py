"""Run one RQ worker for the portal: `python worker.py` (as many processes as you like).

The app is built once; every job runs inside its own app context in this process (no fork per job).
The worker also enqueues the reconciler every PORTAL_RECONCILE_INTERVAL seconds; a Redis key makes
sure only one worker in the fleet does so per interval.
"""

from __future__ import annotations

import argparse
import logging
import threading

from portal import create_app
from portal.jobs import enqueue, make_worker, redis_connection

log = logging.getLogger("portal.worker")
RECONCILE_TICK_KEY = "portal:reconcile:tick"


def schedule_reconciler(app, stop: threading.Event) -> None:
    interval = app.config["PORTAL_RECONCILE_INTERVAL"]
    while not stop.wait(interval):
        try:
            with app.app_context():
                if redis_connection().set(RECONCILE_TICK_KEY, "1", nx=True, ex=interval):
                    enqueue("portal.wireguard.jobs.reconcile", description="reconcile stuck configurations")
        except Exception:  # Redis away for a moment: the next tick tries again
            log.exception("could not enqueue the reconciler")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="work until the queue is empty, then exit")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    args = parser.parse_args()

    app = create_app()
    stop = threading.Event()
    if not args.burst:
        threading.Thread(target=schedule_reconciler, args=(app, stop), daemon=True).start()
    worker = make_worker(app, name=args.name)
    try:
        worker.work(burst=args.burst, with_scheduler=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
