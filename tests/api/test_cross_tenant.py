"""Tenant B's token on tenant A's ids: every operation that takes an id answers 404 `not_found`, exactly as for an
id that does not exist, and changes nothing; B's lists never show A's rows."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from portal.api import views as _declares_the_operations  # noqa: F401
from portal.api.spec import OPERATIONS
from portal.audit.models import AuditEvent
from portal.extensions import db
from tests.api.conftest import Api
from tests.conftest import run_worker, unique

WITH_IDS = [operation for operation in OPERATIONS if operation.path_parameters]


@pytest.fixture
def tenant_a_rows(app, api: Api, openvpn_server) -> dict[str, int]:
    router = api.add_router()
    client = api.post("/api/openvpn/clients", {"name": unique("a-client").replace(" ", "-")}).get_json()
    run_worker(app)  # active: A's downloads would work for A
    return {"configuration_id": router["configuration"]["id"], "router_id": router["id"], "client_id": client["id"]}


def event_count(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).where(AuditEvent.tenant_id == tenant_id))


def call(api: Api, method: str, path: str):
    body = {"name": "renamed"} if method == "PATCH" else {}
    return api.client.open(path, method=method, json=body if method in ("POST", "PATCH") else None,
                           headers=api.headers())


def test_every_operation_with_an_id_answers_404_to_another_tenant(app, api: Api, other_api: Api, tenant_a_rows):
    batch = api.post("/api/routers/import", {"csv": f"name\n{unique('a-imported').replace(' ', '-')}\n"})
    tenant_a_rows = {**tenant_a_rows, "import_id": batch.get_json()["import_id"]}
    before = event_count(app, api.tenant_id)
    checked = set()
    for operation in WITH_IDS:
        path = operation.path.format(**tenant_a_rows)
        foreign = call(other_api, operation.method, path)
        assert foreign.status_code == 404, (operation.method, path, foreign.get_json())
        assert foreign.get_json() == {"error": {"code": "not_found", "message": foreign.get_json()["error"][
            "message"]}}
        missing = call(other_api, operation.method, operation.path.format(**{k: 2**31 - 1 for k in tenant_a_rows}))
        assert missing.status_code == 404 and missing.get_json() == foreign.get_json()
        checked.add((operation.method, operation.path))
        own = call(api, operation.method, path) if operation.method == "GET" else None
        assert own is None or own.status_code == 200, (path, own.get_json())
    assert checked == {(operation.method, operation.path) for operation in WITH_IDS}
    assert len(checked) >= 13
    downloads = sum(1 for operation in WITH_IDS if "download" in operation.path)
    assert event_count(app, api.tenant_id) == before + downloads  # A's own downloads, nothing from B


def test_a_router_of_another_tenant_gets_no_configuration(app, api: Api, other_api: Api, tenant_a_rows):
    api.delete(f"/api/vpn/{tenant_a_rows['configuration_id']}")
    run_worker(app)
    response = other_api.post("/api/vpn", {"router_id": tenant_a_rows["router_id"]})
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_lists_show_only_the_tokens_tenant(app, api: Api, other_api: Api, tenant_a_rows):
    for path in ("/api/vpn", "/api/routers", "/api/openvpn/clients"):
        assert other_api.get(path).get_json()["total"] == 0, path
        assert api.get(path).get_json()["total"] == 1, path
    assert other_api.get(f"/api/vpn?router_id={tenant_a_rows['router_id']}").get_json()["items"] == []
    assert other_api.get("/api/vpn/subnet/info").get_json()["network"] is None
