"""The API's operations, through a write token: WireGuard configurations on the original design's paths, routers,
OpenVPN clients, lists and pages, and what lands in the audit log. Jobs run in a real RQ worker."""

from __future__ import annotations

from sqlalchemy import select

from portal.audit.models import AuditEvent
from portal.extensions import db
from portal.openvpn.models import VpnClient
from tests.api.conftest import Api
from tests.conftest import run_worker, unique


def audit_actors(app, target_type: str, target_id: int) -> list[tuple[str, str]]:
    with app.app_context():
        return list(db.session.execute(select(AuditEvent.action, AuditEvent.actor_label).where(
            AuditEvent.target_type == target_type, AuditEvent.target_id == target_id).order_by(AuditEvent.id)))


def test_a_router_added_over_the_api_is_provisioned_and_its_files_download(app, api: Api):
    router = api.add_router("edge-1")
    configuration = router["configuration"]
    assert configuration["status"] == "pending" and configuration["router_id"] == router["id"]
    run_worker(app)
    shown = api.get(f"/api/vpn/{configuration['id']}").get_json()
    assert shown["status"] == "active" and shown["address"] == configuration["address"]
    assert shown["public_key"] == configuration["public_key"] and shown["hub"]["endpoint"].endswith(":51820")
    rsc = api.get(f"/api/vpn/{configuration['id']}/download/mikrotik")
    assert rsc.status_code == 200 and "/interface wireguard" in rsc.get_data(as_text=True)
    assert rsc.headers["Cache-Control"] == "no-store" and ".rsc" in rsc.headers["Content-Disposition"]
    conf = api.get(f"/api/vpn/{configuration['id']}/download/linux")
    assert conf.status_code == 200 and "[Interface]" in conf.get_data(as_text=True)
    assert shown["downloads"]["mikrotik"].endswith(f"/api/vpn/{configuration['id']}/download/mikrotik")
    label = "API token " + token_name(app, api)
    actions = audit_actors(app, "vpn_configurations", configuration["id"])
    assert ("configuration.created", label) in actions
    assert [action for action, actor in actions if actor == label].count("configuration.downloaded") == 2
    assert ("router.created", label) in audit_actors(app, "routers", router["id"])


def token_name(app, api: Api) -> str:
    from tests.api.conftest import token_row

    return token_row(app, api.secret).name


def test_revoke_then_a_new_configuration_with_post_api_vpn(app, api: Api):
    router = api.add_router()
    first = router["configuration"]["id"]
    live = api.post("/api/vpn", {"router_id": router["id"]})
    assert live.status_code == 409 and live.get_json()["error"]["code"] == "conflict"
    revoked = api.delete(f"/api/vpn/{first}")
    assert revoked.status_code == 202 and revoked.get_json()["status"] == "revoking"
    again = api.delete(f"/api/vpn/{first}")
    assert again.status_code == 409 and again.get_json()["error"]["code"] == "conflict"
    run_worker(app)
    gone = api.get(f"/api/vpn/{first}").get_json()
    assert gone["status"] == "revoked" and gone["downloads"] is None
    refused = api.get(f"/api/vpn/{first}/download/mikrotik")
    assert refused.status_code == 409 and refused.get_json()["error"]["code"] == "not_downloadable"
    created = api.post("/api/vpn", {"router_id": router["id"]})
    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    assert created.headers["Location"] == body["url"] and body["url"].endswith(f"/api/vpn/{body['id']}")
    assert body["id"] != first and body["status"] == "pending" and body["router_id"] == router["id"]
    assert api.get(f"/api/routers/{router['id']}").get_json()["configuration"]["id"] == body["id"]


def test_rotate_and_retry(app, api: Api):
    router = api.add_router()
    configuration_id = router["configuration"]["id"]
    early = api.post(f"/api/vpn/{configuration_id}/rotate")
    assert early.status_code == 409 and "active" in early.get_json()["error"]["message"]
    run_worker(app)
    rotating = api.post(f"/api/vpn/{configuration_id}/rotate")
    assert rotating.status_code == 202
    body = rotating.get_json()
    assert body["status"] == "rotating" and body["next_public_key"] not in (None, body["public_key"])
    run_worker(app)
    rotated = api.get(f"/api/vpn/{configuration_id}").get_json()
    assert rotated["status"] == "active" and rotated["public_key"] == body["next_public_key"]
    retry = api.post(f"/api/vpn/{configuration_id}/retry")
    assert retry.status_code == 409 and retry.get_json()["error"]["code"] == "conflict"


def test_lists_filter_and_page_with_a_link_header(app, api: Api):
    routers = [api.add_router(f"site-{index}") for index in range(5)]
    api.delete(f"/api/vpn/{routers[0]['configuration']['id']}")
    first = api.get("/api/vpn?per_page=2")
    body = first.get_json()
    assert body["total"] == 5 and body["page"] == 1 and len(body["items"]) == 2
    assert [item["id"] for item in body["items"]] == sorted((r["configuration"]["id"] for r in routers),
                                                            reverse=True)[:2]
    assert body["next"].endswith("/api/vpn?per_page=2&page=2")
    assert first.headers["Link"] == f'<{body["next"]}>; rel="next"'
    last = api.get("/api/vpn?per_page=2&page=3")
    assert last.get_json()["next"] is None and 'rel="prev"' in last.headers["Link"]
    revoking = api.get("/api/vpn?status=revoking").get_json()
    assert [item["id"] for item in revoking["items"]] == [routers[0]["configuration"]["id"]]
    by_router = api.get(f"/api/vpn?router_id={routers[3]['id']}").get_json()
    assert [item["router_id"] for item in by_router["items"]] == [routers[3]["id"]]
    named = api.get("/api/routers?q=SITE-4").get_json()
    assert [item["name"] for item in named["items"]] == ["site-4"]
    assert api.get("/api/routers?per_page=3").get_json()["total"] == 5


def test_bad_query_and_body_answer_422_with_details(api: Api):
    response = api.get("/api/vpn?per_page=1000&status=lost")
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_request"
    assert {detail["field"] for detail in error["details"]} == {"query.per_page", "query.status"}
    for body in ({}, {"router_id": "1"}, {"router_id": 1, "extra": True}, {"router_id": True}):
        response = api.post("/api/vpn", body)
        assert response.status_code == 422, body
        assert response.get_json()["error"]["code"] == "invalid_request"
    not_json = api.client.post("/api/vpn", data="router_id=1", headers={**api.headers(),
                                                                        "Content-Type": "text/plain"})
    assert not_json.status_code == 415 and not_json.get_json()["error"]["code"] == "unsupported_media_type"
    broken = api.client.post("/api/vpn", data="{", headers={**api.headers(), "Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.get_json()["error"]["code"] == "invalid_json"
    listed = api.client.post("/api/vpn", data="[1]", headers={**api.headers(), "Content-Type": "application/json"})
    assert listed.status_code == 400 and listed.get_json()["error"]["code"] == "invalid_json"
    surrogate = api.client.post("/api/routers", data='{"name": "r", "note": "\\ud800"}',
                                headers={**api.headers(), "Content-Type": "application/json"})
    assert surrogate.status_code == 400 and surrogate.get_json()["error"]["code"] == "invalid_json"
    for note in ("nul \x00 byte", "escape \x1b[31m"):  # PostgreSQL refuses NUL in text; no control characters
        response = api.post("/api/routers", {"name": "controls", "note": note})
        assert response.status_code == 422 and response.get_json()["error"]["details"][0]["field"] == "body.note"
    assert api.get("/api/routers?q=%00").status_code == 422


def test_routers_are_renamed_with_patch_and_not_deleted(app, api: Api):
    router = api.add_router("old-name")
    taken = api.add_router("taken")
    renamed = api.patch(f"/api/routers/{router['id']}", {"name": "new-name", "note": "in the cellar"})
    assert renamed.status_code == 200
    assert renamed.get_json()["name"] == "new-name" and renamed.get_json()["note"] == "in the cellar"
    clash = api.patch(f"/api/routers/{router['id']}", {"name": "TAKEN"})
    assert clash.status_code == 409 and clash.get_json()["error"]["code"] == "conflict"
    same_but_case = api.patch(f"/api/routers/{taken['id']}", {"name": "Taken"})
    assert same_but_case.status_code == 200 and same_but_case.get_json()["name"] == "Taken"
    assert api.patch(f"/api/routers/{router['id']}", {}).status_code == 422
    bad = api.patch(f"/api/routers/{router['id']}", {"name": " bad name!"})
    assert bad.status_code == 422
    deleted = api.delete(f"/api/routers/{router['id']}")
    assert deleted.status_code == 405 and deleted.get_json()["error"]["code"] == "router_delete_unsupported"
    assert f"/api/vpn/{router['configuration']['id']}" in deleted.get_json()["error"]["message"]
    assert "PATCH" in deleted.headers["Allow"]
    events = audit_actors(app, "routers", router["id"])
    assert [action for action, _ in events] == ["router.created", "router.updated"]
    duplicate = api.post("/api/routers", {"name": "NEW-NAME"})
    assert duplicate.status_code == 409


def test_subnet_info(app, api: Api):
    empty = api.get("/api/vpn/subnet/info").get_json()
    assert empty == {"network": None, "hub": None, "used": 0, "free": 0, "total": 0, "percent": 0.0}
    api.add_router()
    api.add_router()
    info = api.get("/api/vpn/subnet/info").get_json()
    assert info["network"].endswith("/24") and info["used"] == 3 and info["total"] == 254
    assert info["free"] == 251 and info["hub"]["name"]


def test_openvpn_clients(app, api: Api, openvpn_server):
    name = unique("laptop").replace(" ", "-")
    created = api.post("/api/openvpn/clients", {"name": name})
    assert created.status_code == 202, created.get_json()
    client = created.get_json()
    assert client["status"] == "pending" and created.headers["Location"] == client["url"]
    early = api.get(f"/api/openvpn/clients/{client['id']}/download")
    assert early.status_code == 409 and early.get_json()["error"]["code"] == "not_downloadable"
    run_worker(app)
    active = api.get(f"/api/openvpn/clients/{client['id']}").get_json()
    assert active["status"] == "active" and active["download"].endswith(f"/{client['id']}/download")
    profile = api.get(f"/api/openvpn/clients/{client['id']}/download")
    assert profile.status_code == 200 and profile.mimetype == "application/x-openvpn-profile"
    assert "<key>" in profile.get_data(as_text=True)
    listed = api.get(f"/api/openvpn/clients?q={name}&status=active").get_json()
    assert [item["id"] for item in listed["items"]] == [client["id"]]
    assert api.post(f"/api/openvpn/clients/{client['id']}/retry").status_code == 409
    revoked = api.delete(f"/api/openvpn/clients/{client['id']}")
    assert revoked.status_code == 202 and revoked.get_json()["status"] == "revoking"
    run_worker(app)
    assert api.get(f"/api/openvpn/clients/{client['id']}").get_json()["status"] == "revoked"
    with app.app_context():
        assert db.session.get(VpnClient, client["id"]).tenant_id == api.tenant_id
    bad = api.post("/api/openvpn/clients", {"name": "server"})
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid"


def test_health_needs_no_token_and_unknown_paths_are_json(client):
    assert client.get("/api/health").get_json() == {"status": "ok"}
    missing = client.get("/api/nothing-here")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "not_found"
    wrong_method = client.put("/api/vpn")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong_method.headers["Allow"]
    for path in ("/api/vpn/99999999999999999999", "/api/vpn/0", "/api/vpn/01", "/api/vpn/-1"):
        for method in ("GET", "DELETE", "POST"):
            response = client.open(path, method=method, headers={"Authorization": "Bearer x"})
            assert response.status_code == 404, (method, path)  # no route: the same for every method


def test_ids_past_the_32_bit_range_are_not_found(api: Api):
    response = api.get("/api/vpn/2147483648")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_a_large_body_is_refused(api: Api):
    response = api.post("/api/routers", {"name": "big", "note": "x" * 70_000})
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "payload_too_large"
