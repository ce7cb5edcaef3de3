"""`Idempotency-Key` on POST: repeats get the first answer, twenty parallel repeats make one resource, the same key
with another request is refused, and a key is forgotten after a day."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import requests
from sqlalchemy import func, select, update

from portal.api.models import IdempotentRequest
from portal.extensions import db
from portal.types import utcnow
from portal.wireguard.models import Router, VpnConfiguration
from tests.api.conftest import Api
from tests.conftest import run_worker, served

PARALLEL = 20


def count(app, model, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).where(model.tenant_id == tenant_id))


def parallel_posts(app, api: Api, path: str, body: dict, key: str) -> list[requests.Response]:
    """PARALLEL threads POST the same request with the same key to a real threaded server, all at once."""
    start = threading.Barrier(PARALLEL)
    with served(app) as base, requests.Session() as session:
        def one(_):
            start.wait()
            return session.post(base + path, json=body, timeout=60,
                                headers={"Authorization": f"Bearer {api.secret}", "Idempotency-Key": key})

        with ThreadPoolExecutor(PARALLEL) as pool:
            return list(pool.map(one, range(PARALLEL)))


def test_twenty_parallel_repeats_make_one_router(app, api: Api):
    answers = parallel_posts(app, api, "/api/routers", {"name": "twenty-at-once"}, str(uuid.uuid4()))
    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.text for answer in answers}) == 1
    assert len({answer.headers["Location"] for answer in answers}) == 1
    assert sum(answer.headers.get("Idempotent-Replayed") == "true" for answer in answers) == PARALLEL - 1
    assert count(app, Router, api.tenant_id) == 1
    assert count(app, VpnConfiguration, api.tenant_id) == 1


def test_twenty_parallel_repeats_make_one_configuration(app, api: Api):
    router = api.add_router()
    api.delete(f"/api/vpn/{router['configuration']['id']}")
    run_worker(app)
    answers = parallel_posts(app, api, "/api/vpn", {"router_id": router["id"]}, "new-config-" + uuid.uuid4().hex)
    assert {answer.status_code for answer in answers} == {202}
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert count(app, VpnConfiguration, api.tenant_id) == 2


def test_without_a_key_parallel_creates_are_still_refused_by_the_service(app, api: Api):
    with served(app) as base, requests.Session() as session:
        def one(_):
            return session.post(base + "/api/routers", json={"name": "no-key"}, timeout=60,
                                headers={"Authorization": f"Bearer {api.secret}"})

        with ThreadPoolExecutor(5) as pool:
            statuses = sorted(answer.status_code for answer in pool.map(one, range(5)))
    assert statuses == [201, 409, 409, 409, 409]


def test_a_repeat_gets_the_first_answer_errors_included(app, api: Api):
    key = {"Idempotency-Key": "abc-123"}
    first = api.post("/api/routers", {"name": "once"}, headers=key)
    again = api.post("/api/routers", {"name": "once"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.get_json() == first.get_json() and again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    conflict_key = {"Idempotency-Key": "conflict-1"}
    refused = api.post("/api/routers", {"name": "ONCE"}, headers=conflict_key)
    assert refused.status_code == 409
    api.patch(f"/api/routers/{first.get_json()['id']}", {"name": "renamed"})
    replayed = api.post("/api/routers", {"name": "ONCE"}, headers=conflict_key)
    assert replayed.status_code == 409 and replayed.get_json() == refused.get_json()  # the first answer, kept
    assert count(app, Router, api.tenant_id) == 1


def test_the_same_key_with_another_request_is_refused(app, api: Api):
    key = {"Idempotency-Key": "reused"}
    assert api.post("/api/routers", {"name": "first"}, headers=key).status_code == 201
    other = api.post("/api/routers", {"name": "second"}, headers=key)
    assert other.status_code == 422 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    elsewhere = api.post("/api/vpn", {"router_id": 1}, headers=key)
    assert elsewhere.status_code == 422


def test_keys_belong_to_their_token(app, api: Api, other_api: Api):
    key = {"Idempotency-Key": "shared-key"}
    mine = api.post("/api/routers", {"name": "mine"}, headers=key)
    theirs = other_api.post("/api/routers", {"name": "mine"}, headers=key)
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"] and "Idempotent-Replayed" not in theirs.headers


def test_answers_before_the_operation_are_not_kept(app, api: Api, read_api: Api):
    key = {"Idempotency-Key": "late"}
    assert api.post("/api/routers", {"name": 7}, headers=key).status_code == 422  # the body, before the operation
    assert api.post("/api/routers", {"name": "late"}, headers=key).status_code == 201
    bad_key = api.post("/api/routers", {"name": "x"}, headers={"Idempotency-Key": "with space"})
    assert bad_key.status_code == 400 and bad_key.get_json()["error"]["code"] == "invalid_idempotency_key"


def test_a_key_is_forgotten_after_a_day(app, api: Api):
    key = {"Idempotency-Key": "daily"}
    first = api.post("/api/routers", {"name": "day-one"}, headers=key)
    with app.app_context():
        db.session.execute(update(IdempotentRequest).where(IdempotentRequest.key == "daily")
                           .values(created_at=utcnow() - timedelta(hours=25)))
        db.session.commit()
    later = api.post("/api/routers", {"name": "day-one"}, headers=key)
    assert first.status_code == 201 and later.status_code == 409  # performed again: the name is taken now
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(IdempotentRequest.key == "daily")) == 1
