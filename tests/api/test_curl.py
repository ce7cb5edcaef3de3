"""The original design's curl examples, as the README writes them, with the real `curl` against a served app and a
real token: add a router, revoke its configuration, `POST /api/vpn {"router_id": N}` answers 202, and once a worker
has provisioned it, `GET /api/vpn/{id}/download/mikrotik` returns the RouterOS script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.api.conftest import make_token
from tests.conftest import create_tenant_admin, run_worker, served

README = Path(__file__).resolve().parents[2] / "README.md"
HOST = "http://127.0.0.1:8000"
# The README's lines, character for character (the test checks they are there); only the host and the router's id
# (1 in the README, a fresh tenant's router here) are put in.
ADD_ROUTER = ("curl -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
              "-d '{\"name\": \"branch-7\"}' http://127.0.0.1:8000/api/routers")
REVOKE = "curl -X DELETE -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8000/api/vpn/$ID"
NEW_CONFIGURATION = ("curl -X POST -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
                     "-d '{\"router_id\": 1}' http://127.0.0.1:8000/api/vpn")
STATUS = "curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8000/api/vpn/$ID"
MIKROTIK = "curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8000/api/vpn/$ID/download/mikrotik"
LINUX = "curl -OJ -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:8000/api/vpn/$ID/download/linux"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")


def test_the_readme_shows_these_commands():
    readme = README.read_text()
    for command in (ADD_ROUTER, REVOKE, NEW_CONFIGURATION, STATUS, MIKROTIK, LINUX):
        assert command in readme, command


def curl(command: str, base: str, cwd: Path | None = None, **env: str) -> tuple[int, str]:
    """Run the command in a shell (so `$TOKEN` is the shell's), with curl told to print the status at the end."""
    result = subprocess.run(["sh", "-c", command.replace(HOST, base) + " -sS -w '\\n%{http_code}'"],
                            capture_output=True, text=True, timeout=30, check=True, cwd=cwd,
                            env={**os.environ, **env})
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def test_the_original_designs_curl_examples(app, tmp_path):
    tenant_id, _ = create_tenant_admin(app)
    token = make_token(app, tenant_id, "write")
    with served(app) as base:
        status, body = curl(ADD_ROUTER, base, TOKEN=token)
        assert status == 201, body
        router = json.loads(body)
        first = str(router["configuration"]["id"])
        status, body = curl(REVOKE, base, TOKEN=token, ID=first)
        assert status == 202 and json.loads(body)["status"] == "revoking"
        run_worker(app)

        status, body = curl(NEW_CONFIGURATION.replace('"router_id": 1', f'"router_id": {router["id"]}'), base,
                            TOKEN=token)
        assert status == 202, body
        configuration = json.loads(body)
        assert configuration["status"] == "pending" and configuration["router_id"] == router["id"]
        new = str(configuration["id"])
        run_worker(app)
        status, body = curl(STATUS, base, TOKEN=token, ID=new)
        assert status == 200 and json.loads(body)["status"] == "active"

        status, script = curl(MIKROTIK, base, TOKEN=token, ID=new)
        assert status == 200
        assert "/interface wireguard" in script and configuration["address"] in script
        status, _ = curl(LINUX, base, cwd=tmp_path, TOKEN=token, ID=new)
        assert status == 200
        (saved,) = tmp_path.glob("*.conf")
        assert "[Interface]" in saved.read_text() and len(saved.stem) <= 15  # wg-quick's interface name

        status, body = curl(MIKROTIK, base, TOKEN="vpt_wrong", ID=new)
        assert status == 401 and json.loads(body)["error"]["code"] == "invalid_token"
