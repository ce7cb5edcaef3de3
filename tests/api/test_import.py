"""The fleet CSV import through the JSON API: POST /api/routers/import (all the rows or none, through the same
service as the page) and GET /api/routers/imports/{id} (its progress, in the token's tenant only)."""

from __future__ import annotations

from sqlalchemy import func, select

from portal.extensions import db
from portal.wireguard.models import Router
from tests.api.conftest import Api
from tests.conftest import run_worker, unique


def names(count: int) -> list[str]:
    return [unique("branch").replace(" ", "-") for _ in range(count)]


def router_count(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Router).where(Router.tenant_id == tenant_id))


def test_a_valid_file_creates_every_router_and_they_go_active(app, api: Api):
    wanted = names(3)
    csv = "name,note\n" + "".join(f"{name},floor {index}\n" for index, name in enumerate(wanted))
    response = api.post("/api/routers/import", {"csv": csv})
    assert response.status_code == 201, response.get_json()
    result = response.get_json()
    assert result["imported"] is True and result["errors"] == [] and len(result["router_ids"]) == 3
    assert [row["name"] for row in result["rows"]] == wanted and all(not row["errors"] for row in result["rows"])
    assert response.headers["Location"].endswith(f"/api/routers/imports/{result['import_id']}")
    routers = [api.get(f"/api/routers/{router_id}").get_json() for router_id in result["router_ids"]]
    assert [router["name"] for router in routers] == wanted and routers[1]["note"] == "floor 1"
    progress = api.get(f"/api/routers/imports/{result['import_id']}").get_json()
    assert progress["total"] == 3 and progress["waiting"] == 3 and progress["finished"] is False

    run_worker(app)
    for router_id in result["router_ids"]:
        assert api.get(f"/api/routers/{router_id}").get_json()["configuration"]["status"] == "active"
    progress = api.get(f"/api/routers/imports/{result['import_id']}").get_json()
    assert progress["by_status"] == {"active": 3} and progress["active"] == 3 and progress["finished"] is True
    assert progress["failed"] == [] and progress["url"] == response.headers["Location"]


def test_a_file_with_an_invalid_row_imports_nothing(app, api: Api):
    good, taken = names(2)
    api.add_router(taken)
    response = api.post("/api/routers/import", {"csv": f"name\n{good}\nbad name!\n{taken}\n"})
    assert response.status_code == 422
    result = response.get_json()
    assert result["imported"] is False and result["import_id"] is None and result["router_ids"] == []
    assert result["error"]["code"] == "import_invalid"
    assert [(row["line"], bool(row["errors"])) for row in result["rows"]] == [(2, False), (3, True), (4, True)]
    assert {detail["field"] for detail in result["error"]["details"]} == {"body.csv.line.3", "body.csv.line.4"}
    assert router_count(app, api.tenant_id) == 1  # the router added before, nothing of the file


def test_a_read_token_cannot_import(app, read_api: Api):
    response = read_api.post("/api/routers/import", {"csv": f"name\n{names(1)[0]}\n"})
    assert response.status_code == 403 and response.get_json()["error"]["code"] == "insufficient_scope"
    assert router_count(app, read_api.tenant_id) == 0


def test_a_file_with_a_password_column_is_refused_whole(app, api: Api):
    response = api.post("/api/routers/import", {"csv": f"name,api_address,API Password\n{names(1)[0]},"
                                                       "192.0.2.1,hunter2\n"})
    assert response.status_code == 422
    result = response.get_json()
    assert result["error"]["code"] == "import_invalid" and result["rows"] == []
    assert "API Password" in result["errors"][0] and "hunter2" not in response.get_data(as_text=True)
    assert result["error"]["details"][0]["field"] == "body.csv"
    assert router_count(app, api.tenant_id) == 0


def test_the_body_is_checked_by_its_schema(api: Api):
    for body in ({}, {"csv": 5}, {"csv": "name\nx\n", "extra": 1}, {"csv": "name\nbad\x00\n"}):
        response = api.post("/api/routers/import", body)
        assert response.status_code == 422 and response.get_json()["error"]["code"] == "invalid_request", body


def test_another_tenants_import_is_not_found(api: Api, other_api: Api):
    response = api.post("/api/routers/import", {"csv": f"name\n{names(1)[0]}\n"})
    assert response.status_code == 201
    import_id = response.get_json()["import_id"]
    assert api.get(f"/api/routers/imports/{import_id}").status_code == 200
    hidden = other_api.get(f"/api/routers/imports/{import_id}")
    assert hidden.status_code == 404 and hidden.get_json()["error"]["code"] == "not_found"
    assert other_api.get("/api/routers/imports/2147483647").status_code == 404


def test_the_document_lists_both_operations(client):
    document = client.get("/api/openapi.json").get_json()
    post = document["paths"]["/api/routers/import"]["post"]
    assert post["x-scope"] == "write" and post["operationId"] == "import_routers"
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RouterImportFile")
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/RouterImportResult")
    refused = post["responses"]["422"]["content"]["application/json"]["schema"]["anyOf"]
    assert [branch["$ref"].rsplit("/", 1)[-1] for branch in refused] == ["RouterImportRefused", "Error"]
    assert "`import_invalid`" in post["responses"]["422"]["description"]
    get = document["paths"]["/api/routers/imports/{import_id}"]["get"]
    assert get["x-scope"] == "read" and "404" in get["responses"]
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/RouterImportProgress")
    assert document["components"]["schemas"]["RouterImportFile"]["properties"]["csv"]["maxLength"] == 1_000_000


def test_a_file_larger_than_other_bodies_is_read_and_its_details_are_capped(api: Api):
    response = api.post("/api/routers/import", {"csv": "name\n" + "bad name!\n" * 4000})  # 40 KB, every row bad
    assert response.status_code == 422
    result = response.get_json()
    assert len(result["rows"]) == 4000 and len(result["error"]["details"]) == 100
    too_many = api.post("/api/routers/import", {"csv": "name\n" + "x\n" * 40_000})  # 80 KB: past 64 KiB
    assert too_many.status_code == 422 and "more than 5000" in too_many.get_json()["errors"][0]
