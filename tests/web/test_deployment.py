"""The deployment files: compose.yaml has what an operator needs, and the commands it and the Dockerfile run
are the ones tested here. (Docker cannot run on CI's machine: the container's own command runs here as a
process instead, against a fresh database, and must answer /healthz and /readyz.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from portal.config import SETTINGS
from portal.devserver import free_port, stop
from tests import vectors

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def dockerfile_cmd() -> list[str]:
    [line] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return json.loads(line.removeprefix("CMD "))


def test_compose_runs_web_worker_postgres_and_redis_with_health_checks_and_a_volume():
    services = compose()["services"]
    assert set(services) == {"web", "worker", "postgres", "redis"}
    for name in ("web", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    assert services["worker"]["command"] == ["python", "worker.py"] and (ROOT / "worker.py").exists()
    assert "command" not in services["web"]  # the image's own command, tested below
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    for name in ("web", "worker"):
        assert services[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}


def test_compose_sets_only_settings_the_portal_knows_and_takes_secrets_from_the_environment():
    environment = compose()["services"]["web"]["environment"]
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
        except requests.ConnectionError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on {url} within {timeout:g} s")
