"""The scaled web tier as compose.yaml runs it, without Docker: its page tier (three gunicorn processes), its
socket tier (one) and Caddy with deploy/Caddyfile in front, as one origin, on the test database and Redis.
A client signs in and opens its socket through the proxy; a change made on a page worker reaches the socket
process through Redis; page requests are served by several processes, Socket.IO by the socket tier alone.

Needs Caddy (the Debian package `caddy`) and no root: skips elsewhere (fails under PORTAL_E2E=required).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from portal.devserver import free_port, stop
from tests.conftest import ROOT, require, router_id_from
from tests.web.test_deployment import compose
from tests.web.test_live import Browser

pytestmark = pytest.mark.system
ACCESS_FORMAT = "%(p)s %(m)s %(U)s %(s)s"  # gunicorn's access log: <pid>, method, path, status
PAGE_WORKERS = 3


class Process:
    """A server started from a command line, its stderr and (for gunicorn) its access log in `workdir`."""

    def __init__(self, name: str, port: int, argv: list[str], env: dict[str, str], workdir: Path):
        self.name, self.url, self.access_log = name, f"http://127.0.0.1:{port}", workdir / f"{name}.access.log"
        self.stderr = open(workdir / f"{name}.log", "w")  # noqa: SIM115 - closed in stop()
        env = {**env, "GUNICORN_CMD_ARGS": f"--access-logfile {self.access_log} --access-logformat '{ACCESS_FORMAT}'"}
        self.popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                      start_new_session=True)

    def log(self) -> str:
        return Path(self.stderr.name).read_text()[-3000:]

    def served(self) -> list[tuple[int, str, str, int]]:
        """(pid, method, path, status) of every request in the access log so far."""
        if not self.access_log.exists():
            return []
        return [(int(pid), method, path, int(status)) for pid, method, path, status in
                re.findall(r"^<(\d+)> (\S+) (\S+) (\d+)$", self.access_log.read_text(), re.M)]

    def stop(self) -> int:
        stop(self.popen)
        self.stderr.close()
        return self.popen.returncode


def wait_until_answering(url: str, processes: list[Process], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in processes:
            assert process.popen.poll() is None, f"{process.name} exited:\n{process.log()}"
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout:g} s")


@pytest.fixture
def tier(app, tmp_path):
    """Compose's web and live commands on free ports, and Caddy in front: the three processes by service name
    (stopped here unless the test did)."""
    require(shutil.which("caddy") is not None, "Caddy is not installed (apt-get install caddy)")
    services = compose()["services"]
    web_port, live_port, proxy_port = free_port(), free_port(), free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "FLASK_APP": "portal",
           "PORTAL_TRUSTED_PROXIES": "1", "PORTAL_WEB_WORKERS": str(PAGE_WORKERS), "PORTAL_WEB_THREADS": "2"}
    web_argv = [part.replace("0.0.0.0:8000", f"127.0.0.1:{web_port}") for part in services["web"]["command"]]
    live_argv = [part.replace("0.0.0.0:8000", f"127.0.0.1:{live_port}").replace("${PORTAL_LIVE_THREADS:-1000}", "32")
                 for part in services["live"]["command"]]
    proxy_env = {**env, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path),
                 "PORTAL_SITE": f"http://127.0.0.1:{proxy_port}", "PORTAL_WEB_UPSTREAM": f"127.0.0.1:{web_port}",
                 "PORTAL_LIVE_UPSTREAM": f"127.0.0.1:{live_port}"}
    caddy = ["caddy", "run", "--config", str(ROOT / "deploy/Caddyfile"), "--adapter", "caddyfile"]
    started: dict[str, Process] = {}
    try:
        for name, port, argv, process_env in (("web", web_port, web_argv, env), ("live", live_port, live_argv, env),
                                              ("proxy", proxy_port, caddy, proxy_env)):
            started[name] = Process(name, port, argv, process_env, tmp_path)
        for process in ("proxy", "live"):
            wait_until_answering(f"{started[process].url}/healthz", list(started.values()))
        yield started
    finally:
        for process in started.values():
            process.stop()


def test_pages_on_several_processes_and_hints_from_them_reach_the_socket_process_through_one_origin(
        app, tier, tenant_admin):
    processes = tier
    base_url, web, live = processes["proxy"].url, processes["web"], processes["live"]
    browser = Browser(base_url, tenant_admin[1], app)
    try:
        browser.connect()  # through the proxy, with the cookie of a sign-in made on the page tier
        response = browser.http.post(f"{base_url}/routers/new", allow_redirects=False,
                                     data={"name": "Across processes", "csrf_token": browser.csrf("/routers/new")})
        router_id = router_id_from(response)
        hinted = browser.events_until(lambda event, data: event == "status" and data.get("router_id") == router_id)
        assert hinted[-1][1]["status"] == "pending"

        with ThreadPoolExecutor(max_workers=12) as pool:  # a dozen people opening pages at once
            assert set(pool.map(lambda _: requests.get(f"{base_url}/login", timeout=30).status_code,
                                range(48))) == {200}
    finally:
        browser.close()

    for process in (processes["proxy"], live, web):
        returncode = process.stop()
        if process is not processes["proxy"]:
            assert returncode == 0, process.log()
            assert "Traceback" not in process.log(), process.log()

    pages, sockets = web.served(), live.served()
    [change] = [pid for pid, method, path, _ in pages if (method, path) == ("POST", "/routers/new")]
    [socket_pid] = {pid for pid, *_ in sockets}  # its health checks (gunicorn does not log a WebSocket)
    page_pids = {pid for pid, *_ in pages}
    assert len(page_pids) > 1 and socket_pid not in page_pids and change in page_pids
    assert not any(path.startswith("/socket.io/") for _, _, path, _ in pages)  # the socket went to the other tier


def test_each_tier_refuses_the_others_paths_and_the_proxy_sends_each_to_its_own(tier):
    def status(process: str, path: str) -> int:
        return requests.get(tier[process].url + path, timeout=10).status_code

    socket_io = "/socket.io/?EIO=4&transport=polling"
    assert (status("web", socket_io), status("live", "/login")) == (404, 404)
    assert (status("proxy", socket_io), status("proxy", "/login")) == (200, 200)
