"""RouterOS API access on the router page: the form, Test connection, Push configuration and key rotation over
the API, through the views and real RQ workers, against the in-test router and a hub whose handshakes are
simulated from the keys both sides hold (`tests.routeros.simulated_hub`)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select, text, update

from portal.audit.models import AuditEvent
from portal.crypto import Keyring
from portal.extensions import db
from portal.routeros import jobs as routeros_jobs
from portal.routeros.client import ADDRESSES, FILTER, INTERFACES, PEERS
from portal.routeros.models import PushStatus, RouterPush
from portal.types import utcnow
from portal.wireguard import drivers
from portal.wireguard.models import Router, Status
from tests.conftest import (
    add_router,
    configuration_of,
    csrf_token,
    login,
    post,
    router_id_from,
    run_worker,
    worker_process,
)
from tests.conftest import totp_code as fresh_code
from tests.routeros.fake_routeros import FakeRouterOS
from tests.routeros.simulated_hub import SimulatedHub

PASSWORD = "router-api-password"


@pytest.fixture
def hub(monkeypatch):
    simulated = SimulatedHub("")
    monkeypatch.setitem(drivers.DRIVERS, "none", simulated.for_hub)
    return simulated


@pytest.fixture(autouse=True)
def quick(app, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_TIMEOUT", 3.0)
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_HANDSHAKE_WAIT", 30.0)


@pytest.fixture
def router():
    with FakeRouterOS(identity="branch-7", board="hAP ax3", uptime="1w2d3h") as fake:
        fake.state.seed()
        yield fake


def new_router(app, client, name: str = "api-router") -> int:
    response = add_router(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    run_worker(app)
    return router_id_from(response)


def give_access(client, router_id: int, fake: FakeRouterOS, **fields):
    data = {"address": fake.host, "port": str(fake.port), "username": "portal", "password": PASSWORD,
            **({"tls": "y"} if fake.tls else {}), **fields}
    return post(client, f"/routers/{router_id}/routeros", data)


def row(app, model, row_id: int):
    with app.app_context():
        found = db.session.get(model, row_id)
        db.session.expunge(found)
        return found



def last_push(app, router_id: int) -> RouterPush:
    with app.app_context():
        found = db.session.scalar(select(RouterPush).where(RouterPush.router_id == router_id)
                                  .order_by(RouterPush.id.desc()))
        db.session.expunge(found)
        return found


def router_actions(app, router_id: int) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.target_type == "routers", AuditEvent.target_id == router_id).order_by(AuditEvent.id)))


def page(client, router_id: int) -> str:
    response = client.get(f"/routers/{router_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def portal_items(fake: FakeRouterOS) -> dict[str, list[dict]]:
    return {path: [item for item in items if (item.get("comment") or "").startswith("vpn-portal:")]
            for path, items in fake.state.snapshot().items()}


def sweep_and_work(app) -> None:
    with app.app_context():
        routeros_jobs.sweep()
    run_worker(app)


# API access and Test connection ---------------------------------------------------------------------------

def test_test_connection_shows_identity_version_board_and_uptime_on_the_router_page(app, admin_client, router):
    router_id = new_router(app, admin_client)
    assert "Set up API access" in page(admin_client, router_id)
    assert give_access(admin_client, router_id, router).status_code == 303

    response = post(admin_client, f"/routers/{router_id}/routeros/test")
    assert response.status_code == 303
    run_worker(app)

    html = page(admin_client, router_id)
    for shown in ("branch-7", "7.16.1 (stable)", "hAP ax3", "1w2d3h"):
        assert shown in html
    assert "API unreachable" not in html
    assert router_actions(app, router_id)[-2:] == ["router.api.test.requested", "router.api.tested"]


def test_the_password_is_never_shown_nor_audited_and_a_blank_one_keeps_it(app, admin_client, router):
    router_id = new_router(app, admin_client)
    give_access(admin_client, router_id, router)
    form = admin_client.get(f"/routers/{router_id}/routeros").get_data(as_text=True)
    assert PASSWORD not in form and "stored (leave empty to keep it)" in form
    assert PASSWORD not in page(admin_client, router_id)

    assert give_access(admin_client, router_id, router, password="", port=str(router.port)).status_code == 303
    assert row(app, Router, router_id).api_password == PASSWORD
    with app.app_context():
        details = [str(event.details) for event in db.session.scalars(select(AuditEvent))]
        stored = db.session.execute(text("SELECT api_password FROM routers WHERE id = :id"), {"id": router_id}).scalar()
    assert not any(PASSWORD in text for text in details)
    assert PASSWORD not in stored  # a Fernet token at rest


def test_the_routers_list_decrypts_no_api_password(app, admin_client, router, monkeypatch):
    router_id = new_router(app, admin_client)
    give_access(admin_client, router_id, router)
    decrypted = []
    original = Keyring.decrypt
    monkeypatch.setattr(Keyring, "decrypt", lambda keyring, token: decrypted.append(original(keyring, token))
                        or decrypted[-1])
    assert "api-router" in admin_client.get("/routers").get_data(as_text=True)
    assert PASSWORD not in decrypted  # a list of 50 routers would decrypt 50 passwords it never shows
    assert "Test connection" in page(admin_client, router_id)  # the router page still knows it has access


def test_bad_values_are_shown_next_to_their_field_and_nothing_is_saved(app, admin_client, router):
    router_id = new_router(app, admin_client)
    response = give_access(admin_client, router_id, router, address="not a host!", password="")
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert 'id="address-error"' in html and "A host name or an IP address" in html
    response = give_access(admin_client, router_id, router, password="")
    assert response.status_code == 422 and 'id="password-error"' in response.get_data(as_text=True)
    response = give_access(admin_client, router_id, router, port="70000")
    assert response.status_code == 422 and 'id="port-error"' in response.get_data(as_text=True)
    stored = row(app, Router, router_id)
    assert (stored.api_address, stored.api_username, stored.api_password) == (None, None, None)
    assert "router.api.updated" not in router_actions(app, router_id)


def test_read_only_support_sees_the_panel_but_cannot_change_api_access(app, router, support_user, admin_client):
    router_id = new_router(app, admin_client)
    give_access(admin_client, router_id, router)
    client = app.test_client()
    assert login(client, support_user).status_code == 302
    visit = client.post(f"/support/tenants/{admin_client.tenant_id}/start",
                        data={"reason": "Ticket 12: router unreachable", "code": fresh_code(app, support_user),
                              "csrf_token": csrf_token(client, "/support")})
    assert visit.status_code in (302, 303)
    html = page(client, router_id)
    assert "RouterOS API" in html and "Test connection</button>" not in html and PASSWORD not in html
    assert client.get(f"/routers/{router_id}/routeros").status_code == 403
    assert give_access(client, router_id, router, address="192.0.2.99").status_code == 403
    assert post(client, f"/routers/{router_id}/routeros/push").status_code == 403
    assert row(app, Router, router_id).api_address == router.host


def test_a_wrong_password_is_reported_on_the_router_page(app, admin_client, router):
    router_id = new_router(app, admin_client)
    give_access(admin_client, router_id, router, password="not-the-password")
    post(admin_client, f"/routers/{router_id}/routeros/test")
    run_worker(app)
    assert "API unreachable: The router refused the username or password" in page(admin_client, router_id)
    assert router.logins == [("portal", False)]


def test_tls_pins_the_certificate_and_a_new_one_is_refused_before_the_password(app, admin_client):
    with FakeRouterOS(tls=True) as router:
        router_id = new_router(app, admin_client)
        give_access(admin_client, router_id, router)
        post(admin_client, f"/routers/{router_id}/routeros/test")
        run_worker(app)
        assert row(app, Router, router_id).api_fingerprint == router.certificate.fingerprint
        assert "router.api.certificate.pinned" in router_actions(app, router_id)
        assert router.certificate.fingerprint in page(admin_client, router_id)

        router.use_new_certificate()
        post(admin_client, f"/routers/{router_id}/routeros/test")
        run_worker(app)
        assert "The router&#39;s TLS certificate changed" in page(admin_client, router_id)
        assert len(router.logins) == 1

        # Replaced on purpose: forget the pin, and the next login pins the new certificate.
        give_access(admin_client, router_id, router, password="", forget_certificate="y")
        post(admin_client, f"/routers/{router_id}/routeros/test")
        run_worker(app)
        assert row(app, Router, router_id).api_fingerprint == router.certificate.fingerprint


def test_routeros_6_is_refused_with_a_clear_message(app, admin_client, hub):
    with FakeRouterOS(version="6.49.10 (long-term)") as router:
        router_id = new_router(app, admin_client)
        give_access(admin_client, router_id, router)
        post(admin_client, f"/routers/{router_id}/routeros/test")
        run_worker(app)
        assert "WireGuard needs RouterOS 7" in page(admin_client, router_id)
        assert row(app, Router, router_id).api_version == "6.49.10 (long-term)"

        post(admin_client, f"/routers/{router_id}/routeros/push")
        run_worker(app)
        push = last_push(app, router_id)
        assert push.status == PushStatus.FAILED and "RouterOS 6.49.10" in push.last_error
        assert "/interface/wireguard/add" not in router.commands


# Push --------------------------------------------------------------------------------------------------------

def test_push_is_active_only_after_the_hub_sees_the_handshake(app, admin_client, router, hub):
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    hub.link_up = False  # the router cannot reach the hub yet
    give_access(admin_client, router_id, router)
    post(admin_client, f"/routers/{router_id}/routeros/push")
    run_worker(app)

    push = last_push(app, router_id)
    assert (push.status, push.step) == (PushStatus.WAITING, "handshake")
    assert [len(items) for items in portal_items(router).values()] == [1, 1, 1, 1]
    assert "waiting for the router's handshake on the hub" in page(admin_client, router_id)

    hub.link_up = True
    time.sleep(2.1)  # the next look at the hub (HANDSHAKE_POLL)
    sweep_and_work(app)
    push = last_push(app, router_id)
    assert push.status == PushStatus.ACTIVE and push.handshake_at is not None
    assert "the hub saw its handshake" in page(admin_client, router_id)
    actions = router_actions(app, router_id)
    assert actions[-4:] == ["router.push.requested", "router.push.started", "router.push.applied",
                            "router.push.succeeded"]


def test_a_push_without_a_handshake_in_time_fails_and_says_why(app, admin_client, router, hub, monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_HANDSHAKE_WAIT", 0.0)
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    hub.link_up = False
    give_access(admin_client, router_id, router)
    post(admin_client, f"/routers/{router_id}/routeros/push")
    run_worker(app)
    push = last_push(app, router_id)
    assert push.status == PushStatus.FAILED and "No handshake from the router on the hub" in push.last_error
    assert configuration_of(app, router_id).status == Status.ACTIVE  # the VPN status is not the push's


def test_pushing_twice_through_the_portal_leaves_one_of_each(app, admin_client, router, hub):
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    give_access(admin_client, router_id, router)
    for _ in range(2):
        post(admin_client, f"/routers/{router_id}/routeros/push")
        run_worker(app)
        assert last_push(app, router_id).status == PushStatus.ACTIVE
    assert last_push(app, router_id).changes == "unchanged"
    ours = portal_items(router)
    assert {path: len(items) for path, items in ours.items()} == {INTERFACES: 1, PEERS: 1, ADDRESSES: 1, FILTER: 1}
    assert ours[INTERFACES][0]["private-key"] == configuration_of(app, router_id).private_key


def test_a_push_waits_for_a_router_that_does_not_answer_and_retries(app, admin_client, hub):
    with FakeRouterOS(silent=True) as router:
        router_id = new_router(app, admin_client)
        give_access(admin_client, router_id, router)
        post(admin_client, f"/routers/{router_id}/routeros/push")
        started = time.monotonic()
        run_worker(app)
        assert time.monotonic() - started < 3.0 + 2  # PORTAL_ROUTEROS_TIMEOUT, and the job's own work
        push = last_push(app, router_id)
        assert push.status == PushStatus.PENDING and "no answer within 3 s" in push.last_error
        assert "router.push.retry" in router_actions(app, router_id)


# Rotation over the API ------------------------------------------------------------------------------------

def rotate(app, client, router_id: int) -> str:
    """Rotate keys from the router page; what the page said right after."""
    configuration_id = configuration_of(app, router_id).id
    assert post(client, f"/configurations/{configuration_id}/rotate").status_code == 303
    said = client.get(f"/routers/{router_id}").get_data(as_text=True)
    run_worker(app)
    return said


def test_rotation_over_the_api_moves_router_and_hub_to_the_new_keys(app, admin_client, router, hub):
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    give_access(admin_client, router_id, router)
    post(admin_client, f"/routers/{router_id}/routeros/push")
    run_worker(app)
    before = configuration_of(app, router_id)

    said = rotate(app, admin_client, router_id)

    assert "keeps the old key working until the new one has a handshake" in said
    after = configuration_of(app, router_id)
    push = last_push(app, router_id)
    assert push.kind == "rotate" and push.status == PushStatus.ACTIVE
    assert after.status == Status.ACTIVE and after.public_key == push.new_public_key != before.public_key
    assert after.next_public_key is None and after.retry_at is None
    interface, = portal_items(router)[INTERFACES]
    assert interface["private-key"] == after.private_key
    assert portal_items(router)[PEERS][0]["preshared-key"] == after.preshared_key
    assert set(hub.peers) == {after.public_key}  # the old peer is gone from the hub
    assert hub.address_holder(f"{after.address}/32") == after.public_key
    actions = router_actions(app, router_id)
    assert actions[actions.index("router.rotate.requested"):] == [
        "router.rotate.requested", "router.rotate.started", "router.rotate.pushed", "router.rotate.hub.peer_added",
        "router.rotate.succeeded"]


def test_rotation_without_the_new_handshake_rolls_the_router_back_to_its_old_keys(app, admin_client, router, hub,
                                                                                   monkeypatch):
    monkeypatch.setitem(app.config, "PORTAL_ROUTEROS_HANDSHAKE_WAIT", 1.0)
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    give_access(admin_client, router_id, router)
    post(admin_client, f"/routers/{router_id}/routeros/push")
    run_worker(app)
    before = configuration_of(app, router_id)

    hub.link_up = False  # the new handshake never comes
    rotate(app, admin_client, router_id)
    push = last_push(app, router_id)
    assert (push.status, push.step) == (PushStatus.WAITING, "handshake")
    # Meanwhile the hub holds both peers; the router (on the new keys) has the address.
    assert set(hub.peers) == {before.public_key, push.new_public_key}
    assert configuration_of(app, router_id).status == Status.ROTATING

    time.sleep(1.1)
    sweep_and_work(app)

    push = last_push(app, router_id)
    after = configuration_of(app, router_id)
    assert push.status == PushStatus.FAILED and "back on its old keys" in push.last_error
    assert after.status == Status.ACTIVE and after.public_key == before.public_key
    assert after.next_public_key is None and after.private_key == before.private_key
    assert portal_items(router)[INTERFACES][0]["private-key"] == before.private_key
    assert portal_items(router)[PEERS][0]["preshared-key"] == before.preshared_key
    assert set(hub.peers) == {before.public_key}
    assert hub.address_holder(f"{before.address}/32") == before.public_key
    hub.link_up = True
    hub.dump(None)
    assert hub.handshakes.get(before.public_key) is not None  # the old keys work again
    assert "Key rotation failed and was rolled back" in page(admin_client, router_id)
    actions = router_actions(app, router_id)
    assert actions[actions.index("router.rotate.requested"):] == [
        "router.rotate.requested", "router.rotate.started", "router.rotate.pushed", "router.rotate.hub.peer_added",
        "router.rotate.rollback.started", "router.rotate.rollback.router", "router.rotate.rolled_back"]


def test_a_rollback_that_cannot_reach_the_router_keeps_both_peers_and_tries_again(app, admin_client, hub):
    with FakeRouterOS() as router:
        router_id = new_router(app, admin_client)
        hub.link(router.state)
        give_access(admin_client, router_id, router)
        post(admin_client, f"/routers/{router_id}/routeros/push")
        run_worker(app)
        before = configuration_of(app, router_id)
        hub.link_up = False
        rotate(app, admin_client, router_id)  # the new keys are on the router; no handshake comes
        router.password = "changed-on-the-router"  # from now on the router refuses the portal
        with app.app_context():  # the handshake's time is up
            db.session.execute(update(RouterPush).where(RouterPush.router_id == router_id)
                               .values(handshake_by=utcnow(), retry_at=utcnow()))
            db.session.commit()

        sweep_and_work(app)

        push = last_push(app, router_id)
        assert (push.status, push.step) == (PushStatus.WAITING, "rollback")
        assert "rolling back to the old keys" in push.last_error
        assert set(hub.peers) == {before.public_key, push.new_public_key}
        assert hub.address_holder(f"{before.address}/32") == before.public_key
        assert configuration_of(app, router_id).status == Status.ROTATING

        router.password = PASSWORD
        sweep_and_work(app)
        push = last_push(app, router_id)
        assert push.status == PushStatus.FAILED and "back on its old keys" in push.last_error
        assert portal_items(router)[INTERFACES][0]["private-key"] == before.private_key
        assert set(hub.peers) == {before.public_key}


def test_a_rotation_that_cannot_reach_the_router_is_cancelled_with_the_keys_unchanged(app, admin_client, hub):
    with FakeRouterOS() as router:
        router_id = new_router(app, admin_client)
        hub.link(router.state)
        give_access(admin_client, router_id, router)
        before = configuration_of(app, router_id)
        router.stop()

        rotate(app, admin_client, router_id)

        push = last_push(app, router_id)
        after = configuration_of(app, router_id)
        assert push.status == PushStatus.FAILED and push.last_error.startswith("Keys unchanged:")
        assert (after.status, after.public_key, after.next_public_key) == (Status.ACTIVE, before.public_key, None)
        assert set(hub.peers) == {before.public_key}


def test_without_api_access_or_handshakes_rotation_stays_the_hub_only_one(app, admin_client, router, monkeypatch):
    router_id = new_router(app, admin_client)
    give_access(admin_client, router_id, router)  # API access, but the `none` hub reports no handshakes
    before = configuration_of(app, router_id)
    rotate(app, admin_client, router_id)
    after = configuration_of(app, router_id)
    assert after.status == Status.ACTIVE and after.public_key != before.public_key
    with app.app_context():
        assert db.session.scalar(select(RouterPush).where(RouterPush.router_id == router_id)) is None


def test_revoking_during_an_api_rotation_stops_it(app, admin_client, router, hub):
    router_id = new_router(app, admin_client)
    hub.link(router.state)
    hub.link_up = False
    give_access(admin_client, router_id, router)
    configuration_id = configuration_of(app, router_id).id
    post(admin_client, f"/configurations/{configuration_id}/rotate")
    assert post(admin_client, f"/routers/{router_id}/revoke", token_page=f"/routers/{router_id}/revoke"
                ).status_code == 303
    run_worker(app)
    assert configuration_of(app, router_id).status == Status.REVOKED
    push = last_push(app, router_id)
    assert push.status == PushStatus.FAILED and "revoked" in push.last_error
    assert hub.peers == {}


# Facts in monitoring -------------------------------------------------------------------------------------

def test_the_facts_poll_reads_every_router_with_api_access_and_marks_failures(app, admin_client, router, hub):
    reachable = new_router(app, admin_client, "polled-1")
    hub.link(router.state)
    give_access(admin_client, reachable, router)
    post(admin_client, f"/routers/{reachable}/routeros/push")
    run_worker(app)
    with router.state.lock:
        peer_id = router.state.menus[PEERS][0][".id"]
    router.state.peer_status[peer_id] = {"last-handshake": "12s", "rx": "1024", "tx": "2048",
                                         "current-endpoint-address": "203.0.113.5", "current-endpoint-port": "51820"}
    with FakeRouterOS() as gone:
        unreachable = new_router(app, admin_client, "polled-2")
        give_access(admin_client, unreachable, gone)
    with app.app_context():
        assert routeros_jobs.poll_routers() >= 2
    run_worker(app)
    assert row(app, Router, reachable).api_identity == "branch-7"
    assert row(app, Router, reachable).api_peer_state == ("last handshake 12s ago; rx 1024 B; tx 2048 B; "
                                                          "hub seen at 203.0.113.5:51820")
    assert "last handshake 12s ago" in page(admin_client, reachable)
    assert "API unreachable" in page(admin_client, unreachable)
    assert configuration_of(app, unreachable).status == Status.ACTIVE  # the VPN status is not the API's


def test_an_unreachable_router_times_out_in_its_bound_without_holding_up_other_jobs(app, admin_client, router):
    """Two workers, as production runs them: a router that accepts and never answers costs one worker
    PORTAL_ROUTEROS_TIMEOUT seconds; the other worker's job, queued after it, finishes meanwhile."""
    with FakeRouterOS(silent=True) as silent:
        stuck, healthy = new_router(app, admin_client, "stuck"), new_router(app, admin_client, "healthy")
        give_access(admin_client, stuck, silent)
        give_access(admin_client, healthy, router)
        post(admin_client, f"/routers/{stuck}/routeros/test")
        post(admin_client, f"/routers/{healthy}/routeros/test")
        workers = [worker_process("--name", f"routeros-{index}-{time.time_ns()}",
                                  env={"PORTAL_ROUTEROS_TIMEOUT": "4"}) for index in range(2)]
        try:
            started = time.monotonic()
            done: dict[str, float] = {}
            while len(done) < 2 and time.monotonic() - started < 30:
                if "healthy" not in done and row(app, Router, healthy).api_identity:
                    done["healthy"] = time.monotonic()
                if "stuck" not in done and row(app, Router, stuck).api_error:
                    done["stuck"] = time.monotonic()
                time.sleep(0.05)
        finally:
            for process in workers:
                process.terminate()
            for process in workers:
                process.wait(timeout=15)
    assert set(done) == {"healthy", "stuck"}, done
    assert done["healthy"] < done["stuck"] - 2  # answered while the other worker still waited
    assert "no answer within 4 s" in row(app, Router, stuck).api_error
    assert silent.connections == 1
