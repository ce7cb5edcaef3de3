"""The deployment files: compose.yaml has what an operator needs, and the commands it and the Dockerfile run
are the ones tested here. (Docker cannot run on CI's machine: the container's own command runs here as a
process instead, against a fresh database, and must answer /healthz and /readyz; compose's two web tiers
behind its proxy run in tests/system/test_web_tier.py.)"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml
from jsonschema import Draft7Validator

from portal.config import SETTINGS
from portal.devserver import free_port, stop
from tests import vectors

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def tier_command(service: str) -> list[str]:
    """The gunicorn command line of a compose service (after the migrations, for web)."""
    command = compose()["services"][service]["command"]
    if command[:2] == ["sh", "-c"]:
        command = shlex.split(command[2].split("&& exec ", 1)[1])
    return command


def dockerfile_cmd() -> list[str]:
    [line] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def test_compose_runs_the_proxy_both_web_tiers_workers_postgres_and_redis_with_health_checks_and_volumes():
    services = compose()["services"]
    assert set(services) == {"proxy", "web", "live", "worker", "postgres", "redis"}
    for name in ("web", "live", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["worker"]["command"] == ["python", "worker.py"] and (ROOT / "worker.py").exists()
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("web", "live", "worker"):
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert services["live"]["depends_on"]["web"] == {"condition": "service_healthy"}  # migrated first


def test_compose_yaml_is_a_valid_compose_file():
    """What `docker compose config` would say, from the Compose Specification's own schema: a misspelt key
    anywhere (a health check's `intervall`) is refused, not ignored."""
    validator = Draft7Validator(json.loads((ROOT / "tests/vendor/compose-spec.json").read_text()))
    assert [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose())] == []
    misspelt = compose()
    misspelt["services"]["web"]["healthcheck"]["intervall"] = "5s"
    assert not validator.is_valid(misspelt)


def test_compose_serves_one_origin_pages_from_several_processes_and_socket_io_from_one():
    services = compose()["services"]
    web, live = tier_command("web"), tier_command("live")
    assert web[-1] == "portal.live.tiers:page_tier()" and "--workers" not in web  # one per core
    assert live[-1] == "portal.live.tiers:socket_tier()" and live[live.index("--workers") + 1] == "1"
    for command in (web, live):
        assert command[:3] == ["gunicorn", "-c", "python:portal.gunicorn_conf"]
    proxy = services["proxy"]
    assert services["web"]["command"][2].startswith("flask db upgrade && exec gunicorn")
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in proxy["volumes"] and (ROOT / "deploy/Caddyfile").exists()
    assert set(proxy["depends_on"]) == {"web", "live"}
    assert "ports" not in services["web"] and "ports" not in services["live"]  # reached through the proxy only
    caddyfile = (ROOT / "deploy/Caddyfile").read_text()
    assert re.search(r"^\s*reverse_proxy /socket\.io/\* \{\$PORTAL_LIVE_UPSTREAM:live:8000\}$", caddyfile, re.M)
    assert re.search(r"^\s*reverse_proxy \{\$PORTAL_WEB_UPSTREAM:web:8000\}$", caddyfile, re.M)


def test_the_page_tier_runs_two_processes_per_core_and_one_more_unless_told():
    def printed(*args: str, env: dict | None = None) -> dict[str, str]:
        output = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "python:portal.gunicorn_conf", *args,
                                 "--print-config", "portal.live.tiers:page_tier()"], cwd=ROOT, check=True,
                                env={**os.environ, **(env or {})}, capture_output=True, text=True).stdout
        return dict(re.findall(r"^(\w+)\s+= (.*)$", output, re.M))

    cores = len(os.sched_getaffinity(0))
    default = printed(env={"PORTAL_WEB_WORKERS": "", "PORTAL_WEB_THREADS": ""})
    assert (default["workers"], default["threads"], default["worker_class"]) == (str(max(2, cores)), "2", "gthread")
    told = printed(env={"PORTAL_WEB_WORKERS": "3", "PORTAL_WEB_THREADS": "8"})
    assert (told["workers"], told["threads"]) == ("3", "8")
    assert printed("--workers", "1", env={"PORTAL_WEB_WORKERS": "3"})["workers"] == "1"  # the command line wins


def test_compose_sets_only_settings_the_portal_knows_and_takes_secrets_from_the_environment():
    for service in ("web", "live", "worker"):
        environment = compose()["services"][service]["environment"]
        unknown = {key for key in environment if key.removeprefix("PORTAL_") not in SETTINGS}
        assert unknown == set()
        for secret in ("PORTAL_SECRET_KEY", "PORTAL_ENCRYPTION_KEYS"):
            assert re.fullmatch(r"\$\{\w+:\?.+\}", environment[secret]), secret  # required, never a default


def test_the_image_runs_as_a_user_and_checks_its_health():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER portal$", dockerfile, re.M)
    assert "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile


def test_the_images_command_migrates_then_serves(tmp_path):
    """The Dockerfile's CMD, as written, on a fresh SQLite database: migrations run, gunicorn answers."""
    shell, flag, script = dockerfile_cmd()
    assert (shell, flag) == ("sh", "-c") and script.startswith("flask db upgrade && exec gunicorn")
    port = free_port()
    script = script.replace("0.0.0.0:8000", f"127.0.0.1:{port}").replace("${PORTAL_WEB_THREADS:-512}", "8")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FLASK_APP": "portal", "PORTAL_ENV": "production",
           "PORTAL_SECRET_KEY": vectors.SECRET_KEY, "PORTAL_ENCRYPTION_KEYS": vectors.ENCRYPTION_KEY,
           "PORTAL_DATABASE_URL": f"sqlite:///{tmp_path}/portal.db"}
    server = subprocess.Popen(["sh", "-c", script], cwd=ROOT, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        answer = _first_answer(f"http://127.0.0.1:{port}/healthz", server)
        assert answer.status_code == 200 and answer.json() == {"status": "ok"}
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).json()
        assert ready["checks"]["database"]["state"] == "ok"  # migrated: the schema is there
    finally:
        stop(server)
        server.stderr.close()


def _first_answer(url: str, server: subprocess.Popen, timeout: float = 60.0) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, server.stderr.read().decode()[-2000:]
        try:
            return requests.get(url, timeout=2)
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still starting its workers
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on {url} within {timeout:g} s")
