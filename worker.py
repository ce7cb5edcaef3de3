"""Run one worker for the portal: `python worker.py` (as many processes as you like, on any machines).

The app is built once; every job runs inside its own app context in this process (no fork per job). Each
worker also runs the periodic work in threads of its own, each piece once per interval across the fleet:
the sweep (due work that no job is doing, every PORTAL_SWEEP_INTERVAL seconds), hub and server monitoring
(PORTAL_MONITOR_INTERVAL), reconciliation with the hubs (PORTAL_RECONCILE_INTERVAL), ending support
visits that ran out of time, and a sample of each tenant's routers online (PORTAL_TRAFFIC_SAMPLE_INTERVAL).
"""

from __future__ import annotations

import argparse

from portal import create_app
from portal.dashboard import jobs as dashboard_jobs
from portal.jobs.worker import Periodic, run
from portal.openvpn import jobs as openvpn_jobs
from portal.routeros import jobs as routeros_jobs
from portal.tenancy import impersonation
from portal.wireguard import jobs as wireguard_jobs

PERIODIC = (
    Periodic(wireguard_jobs.sweep, "PORTAL_SWEEP_INTERVAL"),
    Periodic(openvpn_jobs.sweep, "PORTAL_SWEEP_INTERVAL"),
    Periodic(wireguard_jobs.poll_hubs, "PORTAL_MONITOR_INTERVAL"),
    Periodic(openvpn_jobs.poll_servers, "PORTAL_MONITOR_INTERVAL"),
    Periodic(wireguard_jobs.reconcile, "PORTAL_RECONCILE_INTERVAL"),
    # Closes the sockets of a support visit on time, even when its page makes no further request.
    Periodic(impersonation.end_expired, "PORTAL_SWEEP_INTERVAL"),
    # RouterOS API: pushes whose next step is due (a handshake to look for, a retry); each router's facts.
    Periodic(routeros_jobs.sweep, "PORTAL_SWEEP_INTERVAL"),
    Periodic(routeros_jobs.poll_routers, "PORTAL_ROUTER_FACTS_INTERVAL"),
    # Each tenant's routers online, for the dashboard's chart: a sample per traffic sample interval.
    Periodic(dashboard_jobs.sample_fleets, "PORTAL_TRAFFIC_SAMPLE_INTERVAL"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--burst", action="store_true", help="work until the queue is empty, then exit")
    parser.add_argument("--name", help="worker name (default: RQ's)")
    args = parser.parse_args()
    run(create_app(), PERIODIC, burst=args.burst, name=args.name)


if __name__ == "__main__":
    main()
