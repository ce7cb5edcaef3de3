"""A worker process for tests, as `worker.py` runs, optionally with the hub driver swapped.

    python tests/support/worker.py [--block-in-driver READY_FILE] [--burst] [--name NAME]

`--block-in-driver` replaces the `none` driver with one that touches READY_FILE and then blocks
forever inside `apply_peers`: the test SIGKILLs this process in the middle of a batch.
"""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import worker  # noqa: E402
from portal import create_app  # noqa: E402
from portal.jobs.worker import run  # noqa: E402
from portal.wireguard import drivers  # noqa: E402


class BlockingDriver(drivers.NoneDriver):
    def __init__(self, ready_file: Path):
        self.ready_file = ready_file

    def apply_peers(self, hub, apply=(), remove=()) -> None:
        self.ready_file.touch()
        while True:
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--block-in-driver", type=Path)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--name")
    args = parser.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test dumps a worker's stacks before killing it
    if args.block_in_driver:
        drivers.DRIVERS["none"] = lambda hub: BlockingDriver(args.block_in_driver)
    run(create_app(), worker.PERIODIC, burst=args.burst, name=args.name)


if __name__ == "__main__":
    main()
