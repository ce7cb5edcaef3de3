"""Tenants for platform admins: rename, remove (only once nothing of it is live), and its routers, read-only."""

from __future__ import annotations

from html import unescape

import pytest
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.audit.service import verify_chain
from portal.extensions import db
from portal.ipam.models import TenantSubnet
from portal.tenancy.models import Impersonation, Tenant, User
from portal.wireguard.models import Hub, Router, VpnConfiguration
from tests.conftest import add_router, configuration_of, login, post, router_id_from, run_worker, unique
from tests.openvpn.test_openvpn import add_client, fake  # noqa: F401 (a fixture)
from tests.web.test_impersonation import staff_client, start_visit


@pytest.fixture
def staff(app, platform_admin):
    client = app.test_client()
    login(client, platform_admin)
    return client


def tenant_name(app, tenant_id: int) -> str | None:
    with app.app_context():
        tenant = db.session.get(Tenant, tenant_id)
        return tenant.name if tenant else None


def events(app, action: str, target_id: int) -> list[AuditEvent]:
    with app.app_context():
        found = db.session.scalars(select(AuditEvent).where(AuditEvent.action == action,
                                                            AuditEvent.target_type == "tenants",
                                                            AuditEvent.target_id == target_id)).all()
        db.session.expunge_all()
        return list(found)


def rename(staff, tenant_id: int, name: str):
    edit = f"/admin/tenants/{tenant_id}/edit"
    return post(staff, edit, {"name": name}, token_page=edit)


def remove(staff, tenant_id: int, confirm_name: str):
    page = f"/admin/tenants/{tenant_id}/remove"
    return post(staff, page, {"confirm_name": confirm_name}, token_page=page)


def test_a_platform_admin_renames_a_tenant_and_its_admins_see_it_in_their_log(app, staff, admin_client):
    tenant_id, before = admin_client.tenant_id, tenant_name(app, admin_client.tenant_id)
    assert f"/admin/tenants/{tenant_id}/edit" in staff.get("/admin/tenants").get_data(as_text=True)
    new_name = unique("Renamed ISP")
    assert rename(staff, tenant_id, f"  {new_name} ").status_code == 303
    assert tenant_name(app, tenant_id) == new_name
    assert new_name in staff.get("/admin/tenants").get_data(as_text=True)
    [event] = events(app, "tenant.renamed", tenant_id)
    assert event.tenant_id == tenant_id and event.details == {"before": before, "after": new_name}
    assert "tenant.renamed" in admin_client.get("/audit").get_data(as_text=True)


def test_a_rename_is_refused_beside_the_field_and_changes_nothing(app, staff, admin_client, other_tenant_admin):
    tenant_id, before = admin_client.tenant_id, tenant_name(app, admin_client.tenant_id)
    taken = tenant_name(app, other_tenant_admin[0])
    for name, message in ((taken.upper(), "exists already"), ("<script>", "Tenant names are 1 to 80"),
                          ("", "This field is required")):
        response = rename(staff, tenant_id, name)
        assert response.status_code == 422
        page = unescape(response.get_data(as_text=True))
        assert 'id="name-error"' in page and message in page
    assert tenant_name(app, tenant_id) == before and events(app, "tenant.renamed", tenant_id) == []
    assert rename(staff, tenant_id, before.upper()).status_code == 303  # its own name, in other letters
    assert tenant_name(app, tenant_id) == before.upper()


def test_removal_is_refused_while_configurations_or_clients_are_live(app, staff, admin_client, fake):  # noqa: F811
    tenant_id = admin_client.tenant_id
    add_router(admin_client, "Still here")
    assert add_client(admin_client, "laptop-live").status_code == 303
    page = f"/admin/tenants/{tenant_id}/remove"
    confirmation = unescape(staff.get(page).get_data(as_text=True))
    assert "It cannot be removed yet" in confirmation and 'name="confirm_name"' not in confirmation
    assert "1 router configuration is not revoked: Still here." in confirmation
    assert "1 OpenVPN client is not revoked: laptop-live." in confirmation

    response = remove(staff, tenant_id, tenant_name(app, tenant_id))
    assert response.status_code == 422
    assert "still has live VPN access" in unescape(response.get_data(as_text=True))
    assert tenant_name(app, tenant_id) is not None and events(app, "tenant.removed", tenant_id) == []
    assert admin_client.get("/routers").status_code == 200


def test_removal_asks_for_the_name(app, staff, admin_client):
    response = remove(staff, admin_client.tenant_id, "something else")
    assert response.status_code == 422
    assert 'id="confirm_name-error"' in response.get_data(as_text=True)
    assert tenant_name(app, admin_client.tenant_id) is not None


def test_removing_a_tenant_takes_its_rows_and_users_and_keeps_the_audit_chain(app, staff, admin_client,
                                                                                support_user):
    tenant_id = admin_client.tenant_id
    router_id = router_id_from(add_router(admin_client, "Retired"))
    run_worker(app)
    assert admin_client.get(f"/configurations/{configuration_of(app, router_id).id}/download.conf").status_code == 200
    assert post(admin_client, f"/routers/{router_id}/revoke").status_code == 303
    run_worker(app)
    visitor = staff_client(app, support_user)
    assert start_visit(app, visitor, support_user, tenant_id).status_code == 302
    with app.app_context():
        network = db.session.scalar(select(TenantSubnet.network).where(TenantSubnet.tenant_id == tenant_id))
        emails = list(db.session.scalars(select(User.email).where(User.tenant_id == tenant_id)))
    name = tenant_name(app, tenant_id)

    assert "This cannot be undone" in staff.get(f"/admin/tenants/{tenant_id}/remove").get_data(as_text=True)
    response = remove(staff, tenant_id, name)
    assert response.status_code == 303 and response.headers["Location"] == "/admin/tenants"
    assert f"Tenant {name} removed" in unescape(staff.get("/admin/tenants").get_data(as_text=True))

    with app.app_context():
        assert db.session.get(Tenant, tenant_id) is None
        assert db.session.scalar(select(func.count()).where(User.email.in_(emails))) == 0
        assert db.session.scalar(select(func.count()).where(Router.tenant_id == tenant_id)) == 0
        assert db.session.scalar(select(func.count()).where(VpnConfiguration.tenant_id == tenant_id)) == 0
        assert db.session.scalar(select(func.count()).where(TenantSubnet.network == network)) == 0  # free again
        visits = db.session.scalar(select(func.count()).where(Impersonation.tenant_id == tenant_id))
        assert visits == 0
        assert verify_chain().ok
        kept = db.session.scalar(select(func.count()).where(AuditEvent.tenant_id == tenant_id,
                                                            AuditEvent.action == "configuration.downloaded"))
        assert kept == 1  # the tenant's history stays in the platform's log
    [event] = events(app, "tenant.removed", tenant_id)
    assert event.tenant_id is None
    assert event.details == {"name": name, "users": emails, "subnet": network}
    ended = [e for e in events_of(app, tenant_id) if e.action == "support.impersonation_ended"]
    assert ended and ended[-1].details["reason"] == "tenant removed"

    assert admin_client.get("/routers").status_code == 302  # signed out: the user is gone
    assert visitor.get("/routers").headers["Location"].endswith("/support")  # the visit is over


def events_of(app, tenant_id: int) -> list[AuditEvent]:
    with app.app_context():
        found = db.session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id)
                                   .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return list(found)


def test_platform_admins_see_a_tenants_routers_read_only(app, staff, admin_client):
    tenant_id = admin_client.tenant_id
    for name in ("Alpha", "Bravo", "Charlie"):
        add_router(admin_client, name)
    run_worker(app)
    configuration = configuration_of(app, router_id_from(add_router(admin_client, "Delta")))
    with app.app_context():
        hub_name = db.session.get(Hub, configuration.hub_id).name
    app.config["PORTAL_PAGE_SIZE"] = 2
    try:
        first = unescape(staff.get(f"/admin/tenants/{tenant_id}/routers").get_data(as_text=True))
        second = unescape(staff.get(f"/admin/tenants/{tenant_id}/routers?page=2").get_data(as_text=True))
    finally:
        app.config["PORTAL_PAGE_SIZE"] = 25
    assert "Alpha" in first and "Bravo" in first and "Charlie" not in first and "Page 1 of 2 (4 routers)" in first
    assert "Charlie" in second and "Delta" in second and "status-pending" in second and "status-active" in second
    assert configuration.address in second and hub_name in second
    for secret_or_control in (configuration.public_key, configuration.preshared_key, "download.", "/qr", "Revoke"):
        assert secret_or_control not in first + second


def test_tenant_admins_cannot_see_the_platform_pages_of_tenants(app, admin_client, other_tenant_admin, staff):
    own, other = admin_client.tenant_id, other_tenant_admin[0]
    for path in (f"/admin/tenants/{own}/routers", f"/admin/tenants/{other}/routers", f"/admin/tenants/{own}/edit",
                 f"/admin/tenants/{own}/remove"):
        assert admin_client.get(path).status_code == 403
    assert post(admin_client, f"/admin/tenants/{own}/remove", {"confirm_name": "x"}).status_code == 403
    assert staff.get("/admin/tenants/999999/routers").status_code == 404
    assert staff.get("/admin/tenants/999999/remove").status_code == 404
