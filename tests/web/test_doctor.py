"""`flask doctor` names exactly what is wrong: a Redis that does not answer, a hub whose host key changed, a hub
nobody answers for, a hub not set up yet; and exits 1 for scripts."""

from __future__ import annotations

import os

import pytest

from portal.devserver import free_port
from portal.doctor import ERROR, OK, doctor_command, run_checks
from portal.extensions import db
from portal.wireguard.models import Hub
from tests import vectors
from tests.conftest import require
from tests.lab import Sshd, sshd_missing
from tests.web.test_factory import built_app
from tests.web.test_ops import registered_worker


def findings(app, check: str | None = None):
    with app.app_context():
        found = list(run_checks())
    return [finding for finding in found if check is None or finding.check == check]


def add_ssh_hub(app, target, interface: str = "lo") -> str:
    name = f"doctor-{os.getpid()}-{free_port()}"
    with app.app_context():
        db.session.add(Hub(name=name, endpoint_host="hub.example", endpoint_port=51820, interface=interface,
                           public_key=vectors.HUB_PUBLIC_KEY, driver="ssh", ssh_host=target.host,
                           ssh_port=target.port, ssh_user=target.username, ssh_host_key=target.host_key,
                           ssh_private_key=target.private_key))
        db.session.commit()
    return f"hub {name}"


def remove_hub(app, label: str) -> None:
    with app.app_context():
        db.session.delete(db.session.query(Hub).filter_by(name=label.removeprefix("hub ")).one())
        db.session.commit()


def test_a_healthy_install_passes_the_core_checks(app):
    with registered_worker(app):
        states = {finding.check: finding.state for finding in findings(app)
                  if finding.check in ("database", "redis", "workers", "clock")}
    assert states == {"database": OK, "redis": OK, "workers": OK, "clock": OK}


def test_a_wrong_redis_url_is_named_and_the_command_fails():
    url = f"redis://127.0.0.1:{free_port()}/0"
    with built_app({"PORTAL_REDIS_URL": url}) as app:
        [redis] = findings(app, "redis")
        result = app.test_cli_runner().invoke(doctor_command)
    assert redis.state == ERROR and url in redis.message and "PORTAL_REDIS_URL" in redis.fix
    assert result.exit_code == 1 and f"[FAIL] redis: Redis at {url} does not answer" in result.output


@pytest.fixture
def sshd():
    require(sshd_missing() is None, sshd_missing() or "")
    server = Sshd()
    server.start()
    yield server
    server.close()


def test_a_hub_whose_host_key_changed_is_named_with_what_to_do(app, sshd):
    label = add_ssh_hub(app, sshd.target())
    try:
        [before] = findings(app, label)
        assert before.state == OK, before
        sshd.replace_host_key()
        [after] = findings(app, label)
    finally:
        remove_hub(app, label)
    assert after.state == ERROR and "host key changed" in after.message and "pin the new key" in after.fix


def test_a_hub_that_is_not_set_up_or_not_there_is_named(app, sshd):
    not_bootstrapped = add_ssh_hub(app, sshd.target(), interface="wg-nothere")
    target = sshd.target()
    gone = add_ssh_hub(app, type(target)(host="127.0.0.1", port=free_port(), username="root",
                                         host_key=target.host_key, private_key=target.private_key))
    try:
        [setup] = findings(app, not_bootstrapped)
        [unreachable] = findings(app, gone)
    finally:
        remove_hub(app, not_bootstrapped)
        remove_hub(app, gone)
    assert setup.state == ERROR and "not bootstrapped" in setup.message
    assert setup.fix == f"flask hub bootstrap {not_bootstrapped.removeprefix('hub ')}"
    assert unreachable.state == ERROR and "unreachable over SSH" in unreachable.message
