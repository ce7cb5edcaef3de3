"""Login hardening: throttling per (account, client address) with growing waits that a stranger cannot turn
against the owner, equal work for every kind of wrong login, and the password rule."""

from __future__ import annotations

import statistics
import time

import pytest

from portal.redis_client import redis_connection
from tests import vectors
from tests.conftest import csrf_token, login

ATTACKER, OWNER = "198.51.100.7", "203.0.113.9"


pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def client_at(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def wait_runs_out(app, email: str, address: str) -> None:
    """Let the current wait of (email, address) end, as time passing would (the count stays)."""
    with app.app_context():
        assert redis_connection().delete(f"portal:login-failures:wait:{address}:{email}") == 1


def test_failures_from_one_address_never_refuse_the_right_password_from_another(app, tenant_admin):
    email = tenant_admin[1]
    attacker = client_at(app, ATTACKER)
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"] + 3):  # and more, each time the wait runs out
        response = login(attacker, email, "guessing wrong")
        if response.status_code == 429:
            wait_runs_out(app, email, ATTACKER)
            response = login(attacker, email, "guessing wrong")
        assert response.status_code == 401
    assert login(attacker, email).status_code == 429  # even the right password, from there
    owner = client_at(app, OWNER)
    signed_in = login(owner, email)
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/routers"


def test_the_wait_grows_with_each_further_failure_up_to_the_lockout(app, tenant_admin):
    email, free = tenant_admin[1], app.config["PORTAL_LOGIN_MAX_FAILURES"]
    client = client_at(app, ATTACKER)
    for _ in range(free):
        assert login(client, email, "guessing wrong").status_code == 401  # the first few are free
    waits = []
    for _ in range(4):
        throttled = login(client, email, "guessing wrong")
        assert throttled.status_code == 429
        assert "Too many failed logins. Try again in" in throttled.get_data(as_text=True)
        waits.append(int(throttled.headers["Retry-After"]))
        wait_runs_out(app, email, ATTACKER)
        assert login(client, email, "guessing wrong").status_code == 401  # counted: the next wait is longer
    assert [round(wait, -1) for wait in waits] == [30, 60, 120, 240], waits
    assert "Try again in 30 seconds" in _first_throttled_page(app, tenant_admin)
    # The right password after the wait clears the count.
    wait_runs_out(app, email, ATTACKER)
    assert login(client, email).status_code == 302


def _first_throttled_page(app, tenant_admin) -> str:
    client = client_at(app, "198.51.100.99")
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        login(client, tenant_admin[1], "guessing wrong")
    return login(client, tenant_admin[1], "guessing wrong").get_data(as_text=True)


def test_the_wait_stops_growing_at_the_lockout_setting(app):
    from portal.auth.service import wait_after

    longest = app.config["PORTAL_LOGIN_LOCKOUT_SECONDS"]
    waits = [wait_after(failures, 5, longest) for failures in range(1, 60)]
    assert waits[:4] == [0, 0, 0, 0] and waits[4:8] == [30, 60, 120, 240]
    assert max(waits) == longest == waits[-1] == 900
    assert waits == sorted(waits)


def test_unknown_deactivated_and_wrong_password_logins_take_the_same_time(app, tenant_admin):
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    deactivated = f"gone-{time.time_ns()}@timing.example"
    with app.app_context():
        user = service.create_user(Actor.system("test"), deactivated, vectors.PASSWORD, Role.TENANT_ADMIN,
                                   tenant_admin[0])
        user.active = False
        db.session.commit()
    kinds = {"unknown": "nobody-at-all@timing.example", "deactivated": deactivated, "wrong password": tenant_admin[1]}
    client = app.test_client()
    token = csrf_token(client)
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    addresses = iter(f"198.51.{100 + n // 250}.{n % 250 + 1}" for n in range(1000))  # never throttled

    def attempt(email: str) -> float:
        started = time.perf_counter()
        response = client.post("/login", data={"email": email, "password": "wrong password here",
                                               "csrf_token": token}, environ_base={"REMOTE_ADDR": next(addresses)})
        elapsed = time.perf_counter() - started
        assert response.status_code == 401
        assert "do not match an active account" in response.get_data(as_text=True)  # the same words
        return elapsed

    for email in kinds.values():  # warm up every path
        attempt(email)
    for _ in range(20):  # interleaved, so a slow moment of the machine falls on every kind alike
        for kind, email in kinds.items():
            times[kind].append(attempt(email))
    medians = {kind: statistics.median(values) for kind, values in times.items()}
    assert max(medians.values()) <= 1.1 * min(medians.values()), medians


@pytest.mark.parametrize(("password", "message"), [
    ("short pass", "at least 12 characters"),
    ("aaaaaaaaaaaaaaaa", "one character repeated"),
    ("abababababababab", "a few characters repeated"),
    ("password1234", "common passwords"),
    ("PassWord1234", "common passwords"),
    ("qwertyuiop123", "common passwords"),
    ("123456789012", "common passwords"),
    ("iloveyou1234", "common passwords"),
    ("Sunshine2024!!", "common passwords"),  # a common word with digits and symbols tacked on
])
def test_weak_passwords_are_refused_with_a_reason(password, message):
    from portal.auth.service import check_password_strength

    with pytest.raises(ValueError, match=message):
        check_password_strength(password)


@pytest.mark.parametrize("password", [vectors.PASSWORD, "long enough password", "Tr0ub4dor&3-horse-staple"])
def test_good_passwords_pass(password):
    from portal.auth.service import check_password_strength

    check_password_strength(password)


def test_the_common_password_list_ships_with_the_project():
    from portal.auth.service import PASSWORD_MIN, common_passwords

    listed = common_passwords()
    assert len(listed) > 300
    assert sum(len(entry) >= PASSWORD_MIN for entry in listed) > 300  # variants long enough to pass the length rule
    assert all(entry == entry.lower() and entry == entry.strip() for entry in listed)


def test_creating_a_user_with_a_weak_password_says_why(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "weak@password.example", "--role", "support",
                                 "--password", "qwertyuiop123"])
    assert result.exit_code != 0 and "common passwords" in result.output
    result = runner.invoke(args=["users", "create", "short@password.example", "--role", "support",
                                 "--password", "too short"])
    assert result.exit_code != 0 and "at least 12 characters" in result.output
