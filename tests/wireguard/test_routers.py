"""Routers and configurations through the pages a tenant admin uses."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from portal.extensions import db
from portal.wireguard.models import Router, Status, VpnConfiguration
from tests.conftest import add_router, configuration_of, login, post, router_id_from, run_worker, unique


def router_id_suffix() -> str:
    return unique("x").split(" ", 1)[1]


def count_routers(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).where(Router.tenant_id == tenant_id))


def test_router_list_shows_status_address_and_subnet_usage(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Depot"))
    run_worker(app)
    page = admin_client.get("/routers").get_data(as_text=True)
    address = configuration_of(app, router_id).address
    assert "Depot" in page and address in page and "status-active" in page
    assert "2 of 254 addresses used" in page  # the hub's and this router's


def test_router_list_searches_sorts_and_paginates(app, admin_client):
    for name in ("alpha", "bravo", "charlie", "alpha-2"):
        add_router(admin_client, name)
    page = admin_client.get("/routers?q=alph").get_data(as_text=True)
    assert "alpha-2" in page and "bravo" not in page
    page = admin_client.get("/routers?sort=name&dir=desc").get_data(as_text=True)
    assert page.index("charlie") < page.index("bravo") < page.index("alpha")
    app.config["PORTAL_PAGE_SIZE"] = 2
    try:
        first = admin_client.get("/routers?sort=name").get_data(as_text=True)
        second = admin_client.get("/routers?sort=name&page=2").get_data(as_text=True)
    finally:
        app.config["PORTAL_PAGE_SIZE"] = 25
    assert "Page 1 of 2" in first and "alpha-2" in first and "charlie" not in first
    assert "charlie" in second


def test_search_from_htmx_gets_the_table_fragment_only(admin_client):
    add_router(admin_client, "fragment-test")
    response = admin_client.get("/routers?q=fragment", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<div id="router-table"')  # the fragment's root, with its live attributes
    assert "<html" not in body
    assert "HX-Request" in response.headers["Vary"]
    boosted = admin_client.get("/routers", headers={"HX-Request": "true", "HX-Boosted": "true"})
    assert "<html" in boosted.get_data(as_text=True)


@pytest.mark.parametrize(("name", "message"), [
    ("", "Give the router a name."),
    ("   ", "Give the router a name."),
    ('x"; /system reset-configuration; :put "', "letters, digits, spaces"),
    ("a" * 65, "letters, digits, spaces"),
    ("-leading-dash", "letters, digits, spaces"),
])
def test_bad_router_names_are_rejected_next_to_the_field_and_change_nothing(app, admin_client, name, message):
    response = add_router(admin_client, name)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="name-error"' in page and message in page
    assert count_routers(app, admin_client.tenant_id) == 0


def test_htmx_form_errors_come_back_as_the_form_fragment(admin_client):
    response = post(admin_client, "/routers/new", {"name": ""}, headers={"HX-Request": "true"})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert body.lstrip().startswith('<form id="router-form"') and 'aria-invalid="true"' in body


def test_htmx_form_success_redirects_the_whole_page(admin_client):
    response = post(admin_client, "/routers/new", {"name": "via-htmx"}, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"].startswith("/routers/")


def test_double_submitted_form_creates_one_router(app, admin_client):
    first = add_router(admin_client, "Twice")
    second = add_router(admin_client, "Twice")
    assert first.status_code == 303
    assert second.status_code == 422 and "already have a router named" in second.get_data(as_text=True)
    assert count_routers(app, admin_client.tenant_id) == 1


@pytest.mark.parametrize("note, message", [("x" * 501, "500 characters"), ("a\x00b", "control character"),
                                           ("bell\x07", "control character")])
def test_a_bad_note_is_refused_next_to_the_field(app, admin_client, note, message):
    response = add_router(admin_client, "Noted", note=note)
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="note-error"' in page and message in page
    assert count_routers(app, admin_client.tenant_id) == 0


def test_a_note_keeps_its_tabs_and_line_breaks(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Multiline", note="line one\n\tline two"))
    with app.app_context():
        assert db.session.get(Router, router_id).note == "line one\n\tline two"


def test_revoke_asks_for_confirmation_then_revokes_for_good(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Doomed"))
    run_worker(app)
    confirm = admin_client.get(f"/routers/{router_id}/revoke").get_data(as_text=True)
    assert "This cannot be undone" in confirm
    configuration = configuration_of(app, router_id)

    assert post(admin_client, f"/routers/{router_id}/revoke").status_code == 303
    assert "status-revoking" in admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    run_worker(app)

    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert "status-revoked" in page and "New configuration (new keys)" in page and "download.rsc" not in page
    revoked = configuration_of(app, router_id)
    assert revoked.status == Status.REVOKED and revoked.private_key is None and revoked.preshared_key is None
    download = admin_client.get(f"/configurations/{configuration.id}/download.conf")
    assert download.status_code == 303
    # Revoking again is refused; nothing changes.
    post(admin_client, f"/routers/{router_id}/revoke")
    assert configuration_of(app, router_id).attempt == revoked.attempt


def test_revoked_router_gets_a_new_configuration_with_new_keys(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Reborn"))
    run_worker(app)
    old = configuration_of(app, router_id)
    post(admin_client, f"/routers/{router_id}/revoke")
    run_worker(app)

    assert post(admin_client, f"/routers/{router_id}/configurations").status_code == 303
    run_worker(app)
    new = configuration_of(app, router_id)
    assert new.id != old.id and new.public_key != old.public_key
    assert new.status == Status.ACTIVE
    assert new.address == old.address  # the lowest free address is the one just released
    # A second "new configuration" while one is live is refused.
    post(admin_client, f"/routers/{router_id}/configurations")
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(VpnConfiguration.router_id == router_id)) == 2


def test_another_tenants_ids_answer_404_on_every_route(app, admin_client, other_tenant_admin):
    router_id = router_id_from(add_router(admin_client, "Private"))
    configuration_id = configuration_of(app, router_id).id
    intruder = app.test_client()
    login(intruder, other_tenant_admin[1])
    for path in (f"/routers/{router_id}", f"/routers/{router_id}/configuration", f"/routers/{router_id}/revoke",
                 f"/configurations/{configuration_id}/download.rsc",
                 f"/configurations/{configuration_id}/download.conf"):
        response = intruder.get(path)
        assert response.status_code == 404, path
        assert "belongs to someone else" in response.get_data(as_text=True)
    for path in (f"/routers/{router_id}/revoke", f"/routers/{router_id}/configurations",
                 f"/configurations/{configuration_id}/retry"):
        assert post(intruder, path).status_code == 404, path
    assert configuration_of(app, router_id).status == Status.PENDING


def test_unknown_ids_and_formats_answer_404(admin_client):
    assert admin_client.get("/routers/999999").status_code == 404
    assert admin_client.get("/configurations/999999/download.rsc").status_code == 404
    router_id = router_id_from(add_router(admin_client, "Formats"))
    response = admin_client.get(f"/routers/{router_id}")
    assert response.status_code == 200
    assert admin_client.get("/configurations/1/download.exe").status_code == 404


def test_downloads_are_audited_and_not_cached(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Audited"))
    configuration = configuration_of(app, router_id)
    pending = admin_client.get(f"/configurations/{configuration.id}/download.rsc", follow_redirects=True)
    assert "Only an active configuration can be downloaded: this one is pending." in pending.get_data(as_text=True)
    run_worker(app)
    response = admin_client.get(f"/configurations/{configuration.id}/download.rsc")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("text/plain")
    audit = admin_client.get("/audit").get_data(as_text=True)
    assert "configuration.downloaded" in audit and "rsc" in audit


def test_router_page_shows_job_history(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "History"))
    run_worker(app)
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    for action in ("router.created", "configuration.created", "configuration.provision.started",
                   "configuration.provision.succeeded"):
        assert action in page


def test_platform_admin_manages_tenants_and_users_but_not_routers(app, platform_admin, outbox):
    client = app.test_client()
    login(client, platform_admin)
    assert client.get("/routers").headers["Location"].endswith("/support")  # only during a visit, read-only
    assert post(client, "/routers/new", {"name": "Nope"}, token_page="/admin/tenants").status_code == 403
    name = f"Fresh ISP {router_id_suffix()}"
    response = post(client, "/admin/tenants", {"name": name}, token_page="/admin/tenants")
    assert response.status_code == 302
    assert name in client.get("/admin/tenants").get_data(as_text=True)
    duplicate = post(client, "/admin/tenants", {"name": name}, token_page="/admin/tenants")
    assert "exists already" in duplicate.get_data(as_text=True)

    email = f"new-admin-{router_id_suffix()}@isp.example"
    with app.app_context():
        from portal.tenancy.service import tenant_by_name

        tenant_id = tenant_by_name(name).id
    response = post(client, "/admin/users", {"email": email, "role": "tenant_admin", "tenant_id": tenant_id},
                    token_page="/admin/users")
    assert response.status_code == 303
    newcomer, link = app.test_client(), outbox.link(email)  # invited: they choose their password
    password = "a long enough passphrase"
    assert post(newcomer, link, {"password": password, "confirm": password}, token_page=link).status_code == 303
    assert login(newcomer, email, password).headers["Location"] == "/routers"


def test_tenant_admin_cannot_open_platform_pages(admin_client):
    assert admin_client.get("/admin/tenants").status_code == 403
    assert admin_client.get("/admin/users").status_code == 403


def test_platform_admin_sees_hubs_and_that_the_default_one_is_not_managed(app, admin_client, platform_admin):
    add_router(admin_client, "puts-a-tenant-on-the-hub")
    client = app.test_client()
    login(client, platform_admin)
    page = client.get("/admin/hubs").get_data(as_text=True)
    assert "hub.test.example:51820" in page and "not managed by the portal" in page
    assert admin_client.get("/admin/hubs").status_code == 403


def test_router_names_are_unique_regardless_of_case(app, admin_client):
    add_router(admin_client, "Core")
    response = add_router(admin_client, "core")
    assert response.status_code == 422 and "already have a router named" in response.get_data(as_text=True)
    with app.app_context():
        db.session.add(Router(tenant_id=admin_client.tenant_id, name="CORE", note=""))
        with pytest.raises(IntegrityError):  # the database itself refuses, for requests that race the check
            db.session.flush()
        db.session.rollback()


def test_rotate_asks_first_saying_what_stops_working(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Careful"))
    run_worker(app)
    configuration_id = configuration_of(app, router_id).id
    assert f"/configurations/{configuration_id}/rotate" in admin_client.get(f"/routers/{router_id}").get_data(
        as_text=True)
    confirm = admin_client.get(f"/configurations/{configuration_id}/rotate")
    assert confirm.status_code == 200 and "The configuration in use stops working" in confirm.get_data(as_text=True)
    assert configuration_of(app, router_id).status == Status.ACTIVE  # asking changed nothing
    assert post(admin_client, f"/configurations/{configuration_id}/rotate").status_code == 303
    assert configuration_of(app, router_id).status in (Status.ROTATING, Status.ACTIVE)
