"""Support staff and platform admins looking at a tenant: who may start, what each mode allows, expiry, audit.

The matrix below is role x mode x action with the expected outcome. Impersonation targets a tenant (what
support looks at is a tenant's pages); platform admins, other staff and oneself have no tenant pages, so they
cannot be targets: a staff member's own pages are never in reach, which the "no tenant" rows check.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from portal.audit.models import AuditEvent
from portal.extensions import db
from portal.tenancy import impersonation as service
from portal.tenancy.access import OWNER_ONLY, READ_ONLY
from portal.tenancy.models import Impersonation, User
from portal.types import utcnow
from portal.wireguard.models import Router
from tests.conftest import add_router, csrf_token, login, post, router_id_from
from tests.conftest import totp_code as fresh_code

REASON = "Ticket 4711: router offline since Monday"


def staff_client(app, email):
    client = app.test_client()
    assert login(client, email).status_code == 302
    return client


def start_visit(app, client, email, tenant_id, changes_reason=None, reason=REASON, code=None):
    data = {"reason": reason, "code": code or fresh_code(app, email),
            "csrf_token": csrf_token(client, "/support")}
    if changes_reason is not None:
        data.update(allow_changes="y", changes_reason=changes_reason)
    return client.post(f"/support/tenants/{tenant_id}/start", data=data)


@pytest.fixture
def tenant_with_router(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Branch 7"))
    with app.app_context():
        configuration_id = db.session.get(Router, router_id).configurations[0].id
    return admin_client, router_id, configuration_id


def actions(router_id: int, configuration_id: int) -> dict[str, tuple[str, str]]:
    """Action -> (method, path)."""
    return {
        "view routers": ("GET", "/routers"),
        "view router": ("GET", f"/routers/{router_id}"),
        "view dashboard": ("GET", "/dashboard"),
        "view audit": ("GET", "/audit"),
        "add": ("POST", "/routers/new"),
        "rotate": ("POST", f"/configurations/{configuration_id}/rotate"),
        "revoke": ("POST", f"/routers/{router_id}/revoke"),
        "download rsc": ("GET", f"/configurations/{configuration_id}/download.rsc"),
        "download conf": ("GET", f"/configurations/{configuration_id}/download.conf"),
        "change own password": ("POST", "/account/password"),
    }


ALLOWED, READ_ONLY_REFUSED, OWNER_REFUSED = "allowed", "read-only", "owner only"
VIEWS = ("view routers", "view router", "view dashboard", "view audit")
CHANGES = ("add", "rotate", "revoke")
SECRETS = ("download rsc", "download conf", "change own password")
EXPECTED = {
    "support read-only": {**{a: ALLOWED for a in VIEWS}, **{a: READ_ONLY_REFUSED for a in CHANGES},
                          **{a: OWNER_REFUSED for a in SECRETS}},
    "support with changes": {**{a: ALLOWED for a in VIEWS + CHANGES}, **{a: OWNER_REFUSED for a in SECRETS}},
    "platform admin": {**{a: ALLOWED for a in VIEWS}, **{a: READ_ONLY_REFUSED for a in CHANGES},
                       **{a: OWNER_REFUSED for a in SECRETS}},
}


def perform(client, method: str, path: str, action: str):
    if method == "GET":
        return client.get(path)
    data = {"name": "Added by support"} if action == "add" else {}
    if action == "change own password":
        data = {"current_password": "x", "new_password": "y", "confirm": "y"}
    return client.post(path, data={**data, "csrf_token": csrf_token(client, "/routers")})


@pytest.mark.parametrize("mode", list(EXPECTED))
def test_what_each_kind_of_visit_may_do(app, tenant_with_router, support_user, platform_admin, mode):
    owner, router_id, configuration_id = tenant_with_router
    email = platform_admin if mode == "platform admin" else support_user
    client = staff_client(app, email)
    changes = "Customer asked us to re-key" if mode == "support with changes" else None
    assert start_visit(app, client, email, owner.tenant_id, changes).status_code == 302

    for action, (method, path) in actions(router_id, configuration_id).items():
        response = perform(client, method, path, action)
        body = response.get_data(as_text=True)
        expected = EXPECTED[mode][action]
        if expected == ALLOWED:
            assert response.status_code in (200, 302, 303), (mode, action, response.status_code)
        else:
            assert response.status_code == 403, (mode, action, response.status_code)
            message = READ_ONLY if expected == READ_ONLY_REFUSED else OWNER_ONLY
            assert message.split(":")[0] in body.replace("&#34;", '"').replace("&#39;", "'"), (mode, action)


def test_the_tenant_admin_does_everything_on_its_own_tenant(app, tenant_with_router):
    owner, router_id, configuration_id = tenant_with_router
    for action in ("view routers", "view router", "download rsc", "download conf", "rotate"):
        method, path = actions(router_id, configuration_id)[action]
        assert perform(owner, method, path, action).status_code in (200, 302, 303), action


def test_a_read_only_visit_shows_no_controls_that_it_would_refuse(app, tenant_with_router, support_user):
    owner, router_id, configuration_id = tenant_with_router
    client = staff_client(app, support_user)
    start_visit(app, client, support_user, owner.tenant_id)
    page = client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "Branch 7" in page and "read-only" in page and REASON in page  # the banner
    for control in ("download.rsc", "download.conf", "Rotate keys", "Revoke", "Add router"):
        assert control not in page, control
    assert "Add router" not in client.get("/routers").get_data(as_text=True)


def test_who_may_start_a_visit(app, tenant_admin, other_tenant_admin, support_user):
    tenant_client = staff_client(app, tenant_admin[1])
    assert tenant_client.get("/support").status_code == 403
    assert post(tenant_client, f"/support/tenants/{other_tenant_admin[0]}/start", {"reason": "x"}).status_code == 403

    client = staff_client(app, support_user)
    assert client.get("/routers").headers["Location"].endswith("/support")  # no tenant pages without a visit
    assert start_visit(app, client, support_user, 10**9).status_code == 404
    assert start_visit(app, client, support_user, tenant_admin[0], reason=" ").status_code == 422
    missing_why = start_visit(app, client, support_user, tenant_admin[0], changes_reason=" ")
    assert missing_why.status_code == 422 and "Say which changes" in missing_why.get_data(as_text=True)
    wrong_code = start_visit(app, client, support_user, tenant_admin[0], code="000000")
    assert wrong_code.status_code == 422
    with app.app_context():
        assert not db.session.scalars(select(Impersonation).join(User, User.id == Impersonation.staff_id)
                                      .where(User.email == support_user)).all()  # refusals changed nothing

    assert start_visit(app, client, support_user, tenant_admin[0]).status_code == 302
    nested = start_visit(app, client, support_user, other_tenant_admin[0])  # no nesting
    assert nested.status_code == 302 and nested.headers["Location"].endswith("/dashboard")
    assert other_tenant_admin[0] != tenant_admin[0]
    assert "Tenant" in client.get("/dashboard").get_data(as_text=True)
    with app.app_context():
        running = db.session.scalars(select(Impersonation).join(User, User.id == Impersonation.staff_id)
                                     .where(User.email == support_user, Impersonation.ended_at.is_(None))).all()
        assert [visit.tenant_id for visit in running] == [tenant_admin[0]]


def test_a_platform_admin_cannot_ask_for_changes(app, tenant_admin, platform_admin):
    client = staff_client(app, platform_admin)
    assert "Allow changes" not in client.get(f"/support/tenants/{tenant_admin[0]}/start").get_data(as_text=True)
    assert start_visit(app, client, platform_admin, tenant_admin[0], changes_reason="please").status_code == 302
    assert post(client, "/routers/new", {"name": "Nope"}).status_code == 403


def test_a_visit_ends_on_time_without_a_request_and_on_the_next_request(app, tenant_admin, support_user):
    client = staff_client(app, support_user)
    start_visit(app, client, support_user, tenant_admin[0])
    assert client.get("/routers").status_code == 200
    with app.app_context():  # the clock moves past the limit
        db.session.execute(update(Impersonation).where(Impersonation.tenant_id == tenant_admin[0])
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    response = client.get("/routers")
    assert response.status_code == 302 and response.headers["Location"].endswith("/support")
    with app.app_context():
        ended = db.session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_admin[0],
                                                            AuditEvent.action == "support.impersonation_ended"))
        assert [event.details["reason"] for event in ended] == ["expired"]

    start_visit(app, client, support_user, tenant_admin[0])
    with app.app_context():
        db.session.execute(update(Impersonation).where(Impersonation.ended_at.is_(None),
                                                       Impersonation.tenant_id == tenant_admin[0])
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
        assert service.end_expired() >= 1  # what the worker runs every sweep interval


def test_the_time_limit_is_the_setting(app, tenant_admin, support_user):
    client = staff_client(app, support_user)
    start_visit(app, client, support_user, tenant_admin[0])
    with app.app_context():
        visit = db.session.scalars(select(Impersonation).where(Impersonation.tenant_id == tenant_admin[0])).one()
        minutes = (visit.expires_at - visit.started_at).total_seconds() / 60
    assert minutes == app.config["PORTAL_IMPERSONATION_MINUTES"] == 60


def test_deactivating_the_support_user_ends_its_visit_at_once(app, tenant_admin, support_user):
    from portal.audit.service import Actor
    from portal.tenancy import service as tenancy

    client = staff_client(app, support_user)
    start_visit(app, client, support_user, tenant_admin[0])
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == support_user))
        tenancy.change_access(Actor.system("test"), user, user.role, None, active=False)
        db.session.commit()
        visit = db.session.scalars(select(Impersonation).where(Impersonation.staff_id == user.id)).one()
        assert visit.ended_at is not None
    assert client.get("/routers").status_code == 302  # signed out


def test_the_tenant_sees_who_looked_why_and_what_changed(app, tenant_admin, support_user):
    client = staff_client(app, support_user)
    start_visit(app, client, support_user, tenant_admin[0], changes_reason="Customer asked for a test router")
    assert post(client, "/routers/new", {"name": "Made by support"}).status_code in (302, 303)
    assert post(client, "/support/end", token_page="/routers").headers["Location"].endswith("/support")
    assert client.get("/routers").headers["Location"].endswith("/support")  # ended: no tenant pages

    with app.app_context():
        support_id = db.session.scalar(select(User.id).where(User.email == support_user))
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_admin[0],
                                                             AuditEvent.impersonator_id.is_not(None))
                                    .order_by(AuditEvent.id)).all()
        assert [event.action for event in events] == ["support.impersonation_started", "router.created",
                                                      "configuration.created", "support.impersonation_ended"]
        assert {(event.actor_id, event.impersonator_id) for event in events} == {(support_id, support_id)}
        assert events[0].details["reason"] == REASON

    owner = staff_client(app, tenant_admin[1])
    page = owner.get("/audit").get_data(as_text=True)
    assert "Support visits" in page and support_user in page and REASON in page
    assert "2 made" in page
