"""The fast part of bench/chaos.py: routers added and revoked over HTTP while workers are SIGKILLed, Redis is
killed, restarted and flushed, and (on PostgreSQL) the database's connections are terminated. Nothing may be
stuck, doubled or answered with a 500, and the audit chain must hold."""

from __future__ import annotations

import os
import subprocess
import sys

from sqlalchemy.engine import make_url

from tests.conftest import ROOT


def chaos_database() -> list[str]:
    """A database of its own next to the tests' PostgreSQL one (the script wipes it); SQLite otherwise."""
    url = os.environ.get("PORTAL_DATABASE_URL", "")
    if not url.startswith("postgresql"):
        return []
    return ["--database-url", make_url(url).set(database="portal_bench_chaos_test").render_as_string(False)]


def test_faults_lose_nothing_double_nothing_and_answer_no_500():
    environ = {name: value for name, value in os.environ.items() if not name.startswith("PORTAL_")}
    run = subprocess.run([sys.executable, "bench/chaos.py", "--routers", "40", "--revoke", "10", *chaos_database()],
                         cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300)
    figures = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line and not line[0].isspace())
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert figures["stuck"] == "0" and figures["duplicate addresses"] == "0" and figures["HTTP 500s"] == "0"
    assert (figures["active"], figures["revoked"]) == ("30", "10")
    assert figures["orphan processes"] == "0" and figures["audit chain"].startswith("intact")
    assert "targets met" in run.stdout
