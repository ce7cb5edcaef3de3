"""Login, logout, throttling, CSRF, cookies, and what an expired session does to an HTMX request."""

from __future__ import annotations

import statistics
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from tests import vectors
from tests.conftest import csrf_token, login, post

pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def test_login_lands_a_tenant_admin_on_the_routers_page(app, tenant_admin):
    client = app.test_client()
    response = login(client, tenant_admin[1].upper())  # e-mail is case-insensitive
    assert response.status_code == 302 and response.headers["Location"] == "/routers"
    assert client.get("/routers").status_code == 200


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(app, tenant_admin):
    response = login(app.test_client(), tenant_admin[1], "not the password")
    assert response.status_code == 401
    assert "do not match an active account" in response.get_data(as_text=True)
    unknown = login(app.test_client(), "nobody@nowhere.example", "whatever it is")
    assert unknown.status_code == 401
    assert "do not match an active account" in unknown.get_data(as_text=True)


def test_repeated_failures_throttle_even_the_right_password(app, tenant_admin):
    client = app.test_client()
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        assert login(client, tenant_admin[1], "guessing wrong").status_code == 401
    throttled = login(client, tenant_admin[1])
    assert throttled.status_code == 429
    assert "Too many failed logins" in throttled.get_data(as_text=True)
    assert client.get("/routers").status_code == 302  # still logged out


def test_failures_from_one_address_do_not_refuse_the_owner_from_another(app, tenant_admin):
    attacker = app.test_client()
    attacker.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        assert login(attacker, tenant_admin[1], "guessing wrong").status_code == 401
    assert login(attacker, tenant_admin[1]).status_code == 429
    assert login(app.test_client(), tenant_admin[1]).status_code == 302  # the owner, from 127.0.0.1


def test_unknown_deactivated_and_wrong_password_answers_cost_the_same(app, tenant_admin):
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    with app.app_context():
        inactive = service.create_user(Actor.system("test"), "gone@timing.example", vectors.PASSWORD,
                                       Role.TENANT_ADMIN, tenant_admin[0])
        inactive.active = False
        db.session.commit()

    def median_ms(email: str) -> float:
        client, times = app.test_client(), []
        for _ in range(9):
            client.environ_base["REMOTE_ADDR"] = f"198.51.100.{len(times) + 20}"  # never throttled
            started = time.perf_counter()
            assert login(client, email, "wrong password here").status_code == 401
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    medians = [median_ms(email) for email in ("nobody@timing.example", "gone@timing.example", tenant_admin[1])]
    assert max(medians) < 1.5 * min(medians), medians  # each pays one scrypt: no account answers early


def test_many_failures_from_one_address_throttle_every_account_from_it(app, tenant_admin):
    client = app.test_client()
    limit = app.config["PORTAL_LOGIN_MAX_FAILURES"] * 10
    for attempt in range(limit):
        login(client, f"guess-{attempt}@nowhere.example", "guessing wrong")
    assert login(client, tenant_admin[1]).status_code == 429


def test_login_form_without_csrf_token_is_rejected(app, tenant_admin):
    response = app.test_client().post("/login", data={"email": tenant_admin[1], "password": vectors.PASSWORD})
    assert response.status_code == 400
    assert "Form expired" in response.get_data(as_text=True)


def test_htmx_request_without_csrf_header_is_rejected_and_with_it_accepted(admin_client):
    refused = admin_client.post("/routers/new", data={"name": "no-token"}, headers={"HX-Request": "true"})
    assert refused.status_code == 400
    accepted = admin_client.post("/routers/new", data={"name": "header-token"},
                                 headers={"HX-Request": "true", "X-CSRFToken": csrf_token(admin_client, "/routers")})
    assert accepted.status_code == 200 and "HX-Redirect" in accepted.headers


def test_session_cookie_is_httponly_and_samesite_lax(app, tenant_admin):
    client = app.test_client()
    response = login(client, tenant_admin[1])
    cookie = next(value for value in response.headers.getlist("Set-Cookie") if value.startswith("session="))
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert not app.config["SESSION_COOKIE_SECURE"]  # testing; production sets Secure (test_factory)


def test_anonymous_page_request_redirects_to_login_with_next(client):
    response = client.get("/routers?q=x")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/routers")


def test_anonymous_htmx_request_gets_hx_redirect_not_a_login_fragment(client):
    response = client.get("/routers", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")
    assert response.get_data(as_text=True) == ""


def test_next_parameter_cannot_send_the_user_off_site(app, tenant_admin):
    client = app.test_client()
    for target in ("https://evil.example/", "//evil.example/", "javascript:alert(1)"):
        response = client.post(f"/login?next={target}", data={"email": tenant_admin[1], "password": vectors.PASSWORD,
                                                               "csrf_token": csrf_token(client)})
        assert response.headers["Location"] == "/routers", target
        client.post("/logout", data={"csrf_token": csrf_token(client, "/routers")})


def test_logout_ends_the_session(admin_client):
    assert post(admin_client, "/logout").status_code == 302
    assert admin_client.get("/routers").status_code == 302


def copy_of(app, client):
    """Another browser holding the same cookie as `client` holds now (as an attacker who saved it would)."""
    thief = app.test_client()
    thief.set_cookie("session", client.get_cookie("session").value)
    return thief


def test_a_cookie_saved_before_logout_is_useless_after_it(app, admin_client):
    token = csrf_token(admin_client, "/routers")
    saved = copy_of(app, admin_client)
    assert saved.get("/routers").status_code == 200
    assert post(admin_client, "/logout").status_code == 302
    assert saved.get("/routers").status_code == 302
    refused = saved.post("/routers/new", data={"name": "after-logout", "csrf_token": token})
    assert refused.status_code in (302, 400) and "/routers/" not in refused.headers.get("Location", "")


def test_a_csrf_token_from_before_logout_is_refused_after_the_next_login(app, tenant_admin):
    client = app.test_client()
    assert login(client, tenant_admin[1]).status_code == 302
    old_token = csrf_token(client, "/routers")
    client.post("/logout", data={"csrf_token": old_token})
    assert login(client, tenant_admin[1]).status_code == 302
    assert client.post("/routers/new", data={"name": "stale-token", "csrf_token": old_token}).status_code == 400
    assert csrf_token(client, "/routers") != old_token


def test_deactivation_ends_the_users_sessions_at_once(app, admin_client):
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import User

    assert admin_client.get("/routers").status_code == 200
    with app.app_context():
        user = db.session.scalar(select(User).where(User.tenant_id == admin_client.tenant_id))
        service.change_access(Actor.system("test"), user, user.role, user.tenant_id, active=False)
        db.session.commit()
    assert admin_client.get("/routers").status_code == 302


def test_an_idle_session_expires(app, admin_client):
    from portal.auth.models import LoginSession
    from portal.extensions import db

    assert admin_client.get("/routers").status_code == 200
    idle = timedelta(minutes=app.config["PORTAL_SESSION_IDLE_MINUTES"] + 1)
    with app.app_context():
        newest = db.session.scalar(select(LoginSession).order_by(LoginSession.id.desc()).limit(1))
        newest.last_seen_at -= idle
        db.session.commit()
    assert admin_client.get("/routers").status_code == 302


def test_pages_carry_security_headers(client):
    response = client.get("/login")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Request-ID"]


def test_unknown_page_is_a_real_page_and_json_clients_get_json(client):
    page = client.get("/no/such/page")
    assert page.status_code == 404 and "<html" in page.get_data(as_text=True)
    api = client.get("/no/such/page", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.get_json()["error"]["code"] == 404
