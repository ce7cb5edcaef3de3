"""Bearer tokens only: missing, malformed, unknown, expired and revoked tokens answer 401; a read token cannot
change anything; a session cookie signs nothing in; each token has a rate limit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from portal.api import ratelimit
from portal.api import views as _declares_the_operations  # noqa: F401
from portal.api.spec import OPERATIONS
from portal.types import utcnow
from tests.api.conftest import Api, make_token, token_row
from tests.conftest import create_tenant_admin, login, post, run_worker

WRITES = [(operation.method, operation.path) for operation in OPERATIONS if operation.scope == "write"]


def concrete(path: str, value: int = 1) -> str:
    return path.replace("{configuration_id}", str(value)).replace("{router_id}", str(value)).replace(
        "{client_id}", str(value))


@pytest.mark.parametrize("header, code", [
    (None, "unauthenticated"),
    ("", "unauthenticated"),
    ("Basic dXNlcjpwYXNz", "unauthenticated"),
    ("Bearer", "unauthenticated"),
    ("Bearer vpt_not-a-real-token", "invalid_token"),
    ("Bearer vpt_" + "A" * 43, "invalid_token"),
])
def test_requests_without_a_valid_token_answer_401(client, header, code):
    headers = {"Authorization": header} if header is not None else {}
    response = client.get("/api/vpn", headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == code
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')


def test_expired_and_revoked_tokens_answer_401_with_their_own_codes(app):
    tenant_id, _ = create_tenant_admin(app)
    expired = make_token(app, tenant_id, expires_at=utcnow() - timedelta(seconds=1))
    revoked = make_token(app, tenant_id, revoked=True)
    for secret, code in ((expired, "token_expired"), (revoked, "token_revoked")):
        response = Api(app, tenant_id, secret).get("/api/routers")
        assert response.status_code == 401 and response.get_json()["error"]["code"] == code
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    soon = make_token(app, tenant_id, expires_at=utcnow() + timedelta(minutes=5))
    assert Api(app, tenant_id, soon).get("/api/routers").status_code == 200


def test_a_token_works_until_it_is_revoked_on_the_page(app, tenant_admin):
    tenant_id, email = tenant_admin
    admin = app.test_client()
    login(admin, email)
    page = post(admin, "/api-tokens", {"name": "ci", "scope": "read", "expires_in_days": "30"},
                token_page="/api-tokens")
    secret = page.get_data(as_text=True).split('id="api-token"')[1].split('value="')[1].split('"')[0]
    api = Api(app, tenant_id, secret)
    assert api.get("/api/routers").status_code == 200
    row = token_row(app, secret)
    post(admin, f"/api-tokens/{row.id}/revoke", token_page="/api-tokens")
    response = api.get("/api/routers")
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "token_revoked"


@pytest.mark.parametrize("method, path", WRITES)
def test_a_read_token_cannot_change_anything(app, read_api: Api, method, path):
    response = read_api.client.open(concrete(path), method=method, json={"router_id": 1, "name": "x"},
                                    headers=read_api.headers())
    assert response.status_code == 403, response.get_json()
    assert response.get_json()["error"]["code"] == "insufficient_scope"


def test_a_read_token_reads_and_downloads(app, api: Api, read_api: Api):
    router = api.add_router()
    configuration_id = router["configuration"]["id"]
    assert read_api.get(f"/api/routers/{router['id']}").status_code == 200
    pending = read_api.get(f"/api/vpn/{configuration_id}/download/linux")
    assert pending.status_code == 409 and pending.get_json()["error"]["code"] == "not_downloadable"
    run_worker(app)
    assert read_api.get(f"/api/vpn/{configuration_id}/download/linux").status_code == 200


def test_the_session_cookie_signs_no_api_request_in(app, admin_client):
    """A signed-in browser (cookie) gets 401 everywhere under /api, and a cross-site POST without a CSRF token is
    refused for want of a token, not let through for want of a CSRF check."""
    assert admin_client.get("/routers").status_code == 200  # the cookie works on the pages
    listed = admin_client.get("/api/routers")
    assert listed.status_code == 401 and listed.get_json()["error"]["code"] == "unauthenticated"
    created = admin_client.post("/api/routers", json={"name": "via-cookie"})
    assert created.status_code == 401
    form = admin_client.post("/api/routers", data={"name": "via-form"})
    assert form.status_code == 401
    assert "Set-Cookie" not in listed.headers


def test_last_use_is_recorded_with_the_address(app, api: Api):
    assert token_row(app, api.secret).last_used_at is None
    api.get("/api/routers", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    row = token_row(app, api.secret)
    assert row.last_used_ip == "192.0.2.7" and utcnow() - row.last_used_at < timedelta(seconds=30)


def test_the_rate_limit_answers_429_with_retry_after(app, api: Api, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_API_RATE_LIMIT", 3)
    answers = [api.get("/api/health") for _ in range(2)]  # no token: not counted
    answers = [api.get("/api/routers") for _ in range(4)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
    assert [answer.headers["X-RateLimit-Remaining"] for answer in answers[:3]] == ["2", "1", "0"]
    limited = answers[-1]
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    other = Api(app, api.tenant_id, make_token(app, api.tenant_id, "read"))
    assert other.get("/api/routers").status_code == 200  # per token


def test_without_redis_the_api_goes_on_unlimited(app, api: Api, monkeypatch, caplog):
    def broken():
        raise RedisConnectionError("down")

    monkeypatch.setattr(ratelimit, "redis_connection", broken)
    response = api.get("/api/routers")
    assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
    assert "rate limit unavailable" in caplog.text
