"""Fixtures of the API tests: tokens made through the service (as the pages make them), a client that sends them,
and an OpenVPN server whose script is faked (the clients' jobs run in a real worker against it)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from sqlalchemy import select

from portal.api import tokens
from portal.api.models import ApiToken
from portal.audit.service import Actor
from portal.extensions import db
from portal.ssh import CommandResult
from tests.conftest import create_tenant_admin, serve_openvpn_through, unique


def make_token(app, tenant_id: int, scope: str = "write", *, expires_at: datetime | None = None,
               revoked: bool = False) -> str:
    """A token of the tenant (made as an admin would), optionally expired or revoked; the secret."""
    with app.app_context():
        created = tokens.create(Actor.system("test"), tenant_id, unique(f"{scope} token").replace(" ", "-"), scope,
                                None)
        if expires_at is not None:
            created.token.expires_at = expires_at
        if revoked:
            tokens.revoke(Actor.system("test"), created.token)
        db.session.commit()
        return created.secret


def token_row(app, secret: str) -> ApiToken:
    with app.app_context():
        row = db.session.scalar(select(ApiToken).where(ApiToken.token_hash == tokens.hash_token(secret)))
        db.session.expunge(row)
        return row


class Api:
    """A test client that sends a bearer token (and JSON bodies)."""

    def __init__(self, app, tenant_id: int, secret: str):
        self.client, self.tenant_id, self.secret = app.test_client(), tenant_id, secret

    def headers(self, extra: dict | None = None) -> dict:
        return {"Authorization": f"Bearer {self.secret}", **(extra or {})}

    def get(self, path: str, **kwargs):
        return self.client.get(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def post(self, path: str, body: dict | None = None, **kwargs):
        return self.client.post(path, json=body if body is not None else {}, headers=self.headers(
            kwargs.pop("headers", None)), **kwargs)

    def patch(self, path: str, body: dict, **kwargs):
        return self.client.patch(path, json=body, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def delete(self, path: str, **kwargs):
        return self.client.delete(path, headers=self.headers(kwargs.pop("headers", None)), **kwargs)

    def add_router(self, name: str | None = None) -> dict:
        response = self.post("/api/routers", {"name": name or unique("router").replace(" ", "-")})
        assert response.status_code == 201, response.get_json()
        return response.get_json()


@pytest.fixture
def api(app) -> Api:
    """A fresh tenant and a write token of it."""
    tenant_id, _ = create_tenant_admin(app)
    return Api(app, tenant_id, make_token(app, tenant_id, "write"))


@pytest.fixture
def other_api(app) -> Api:
    """A second tenant with a write token, for checks that one tenant cannot reach another's rows."""
    tenant_id, _ = create_tenant_admin(app)
    return Api(app, tenant_id, make_token(app, tenant_id, "write"))


@pytest.fixture
def read_api(app, api) -> Api:
    """A read token of the same tenant as `api`."""
    return Api(app, api.tenant_id, make_token(app, api.tenant_id, "read"))


BUNDLE = ("<ca>\n-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n</ca>\n"
          "<cert>\n-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n</cert>\n"
          "<key>\n-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n</key>\n"
          "<tls-crypt>\n-----BEGIN OpenVPN Static key V1-----\nTC\n-----END OpenVPN Static key V1-----\n</tls-crypt>\n")


@dataclass
class FakeScript:
    """The OpenVPN server's `ovpn-client` script: `create` issues, `revoke` revokes, nothing else is needed here."""

    def run(self, argv, stdin=None) -> CommandResult:
        argv = list(argv)
        if argv[0] == "bash":
            return CommandResult("bootstrap", 0, "", "")
        if argv[1] == "create":
            return CommandResult("create", 0, f"# serial: {'AB' * 16}\n# not-after: 2030-01-01T00:00:00Z\n{BUNDLE}",
                                 "")
        if argv[1] == "revoke":
            return CommandResult("revoke", 0, "revoked\n", "")
        return CommandResult(argv[1], 0, "", "")


@pytest.fixture
def openvpn_server(app, monkeypatch):
    """An OpenVPN server open to new clients, its script faked for every server the worker reaches."""
    serve_openvpn_through(app, monkeypatch, FakeScript())
