"""The API tokens page: tenant admins list, make (shown once) and revoke their tenant's tokens, all audited; support
staff looking at the tenant get a 403 and see no link."""

from __future__ import annotations

import re

from sqlalchemy import select

from portal.api.models import ApiToken
from portal.api.tokens import hash_token
from portal.audit.models import AuditEvent
from portal.extensions import db
from tests.api.conftest import Api, make_token
from tests.conftest import csrf_token, login, post, totp_code

TOKEN_FIELD = re.compile(r'id="api-token"[^>]*value="(vpt_[A-Za-z0-9_-]{43})"')


def make(client, **fields):
    data = {"name": "billing", "scope": "write", "expires_in_days": "90", **fields}
    return post(client, "/api-tokens", data, token_page="/api-tokens")


def test_a_token_is_shown_once_and_stored_hashed(app, admin_client):
    response = make(admin_client)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    secret = TOKEN_FIELD.search(response.get_data(as_text=True)).group(1)
    with app.app_context():
        row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
        assert row.tenant_id == admin_client.tenant_id and row.scope == "write" and row.name == "billing"
        assert row.created_by is not None and (row.expires_at - row.created_at).days == 90
        assert secret not in str(db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.tenant_id == admin_client.tenant_id)).all())
    listing = admin_client.get("/api-tokens").get_data(as_text=True)
    assert "billing" in listing and secret not in listing and secret[4:12] not in listing
    assert Api(app, admin_client.tenant_id, secret).get("/api/routers").status_code == 200


def test_the_list_shows_last_use_and_revocation_is_audited(app, admin_client):
    secret = TOKEN_FIELD.search(make(admin_client, name="monitor", scope="read",
                                     expires_in_days="never").get_data(as_text=True)).group(1)
    Api(app, admin_client.tenant_id, secret).get("/api/vpn", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    listing = admin_client.get("/api-tokens").get_data(as_text=True)
    assert "198.51.100.4" in listing and "never" in listing
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(secret)))
    revoked = post(admin_client, f"/api-tokens/{token_id}/revoke", token_page="/api-tokens")
    assert revoked.status_code == 303
    assert "revoked" in admin_client.get("/api-tokens").get_data(as_text=True)
    with app.app_context():
        events = db.session.execute(select(AuditEvent.action, AuditEvent.details).where(
            AuditEvent.target_type == "api_tokens", AuditEvent.target_id == token_id).order_by(AuditEvent.id)).all()
    assert [action for action, _ in events] == ["api_token.created", "api_token.revoked"]
    assert events[0][1] == {"name": "monitor", "scope": "read", "expires_at": None}


def test_bad_values_are_shown_beside_their_fields(app, admin_client):
    assert make(admin_client, name="ok-name").status_code == 201
    duplicate = make(admin_client, name="OK-NAME")
    assert duplicate.status_code == 422 and "exists already" in duplicate.get_data(as_text=True)
    assert make(admin_client, name="!bad").status_code == 422
    assert make(admin_client, scope="admin").status_code == 422
    assert make(admin_client, expires_in_days="3").status_code == 422


def test_another_tenants_token_cannot_be_revoked(app, admin_client, other_tenant_admin):
    foreign = make_token(app, other_tenant_admin[0])
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id).where(ApiToken.token_hash == hash_token(foreign)))
    assert post(admin_client, f"/api-tokens/{token_id}/revoke", token_page="/api-tokens").status_code == 404
    assert Api(app, other_tenant_admin[0], foreign).get("/api/routers").status_code == 200


def test_the_nav_links_to_the_page_for_tenant_admins(admin_client):
    assert 'href="/api-tokens"' in admin_client.get("/routers").get_data(as_text=True)


def test_support_staff_visiting_a_tenant_get_403_and_no_link(app, tenant_admin, support_user):
    staff = app.test_client()
    login(staff, support_user)
    started = staff.post(f"/support/tenants/{tenant_admin[0]}/start", data={
        "reason": "ticket 42", "code": totp_code(app, support_user), "allow_changes": "y",
        "changes_reason": "fix a router", "csrf_token": csrf_token(staff, "/support")})
    assert started.status_code in (302, 303), started.get_data(as_text=True)
    page = staff.get("/routers").get_data(as_text=True)
    assert "ticket 42" in page and 'href="/api-tokens"' not in page
    assert staff.get("/api-tokens").status_code == 403
    assert post(staff, "/api-tokens", {"name": "x", "scope": "write", "expires_in_days": "90"},
                token_page="/routers").status_code == 403
