"""Fleet operations: routers imported from CSV (preview, per-row errors, all or nothing), the live progress of an
import, the same import as a service for the API, and one ZIP of every active router's files."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from sqlalchemy import func, select

from portal.audit.models import AuditEvent
from portal.audit.service import Actor
from portal.extensions import db
from portal.ipam.models import FreeAddress
from portal.wireguard import fleet, jobs
from portal.wireguard.fleet_models import RouterImport, RouterImportItem
from portal.wireguard.models import Router, Status, VpnConfiguration
from tests.conftest import add_router, configuration_of, csrf_token, post, router_id_from, run_worker
from tests.web.test_impersonation import staff_client, start_visit

GOOD = ("name,note,api_address,api_username\n"
        "Branch 1,Main street,10.1.0.1,portal\nBranch 2,,,\nBranch 3,Depot,gw3.example.net,\n")


def upload(client, text: str, filename: str = "routers.csv"):
    return client.post("/routers/import", content_type="multipart/form-data", data={
        "file": (io.BytesIO(text.encode()), filename), "csrf_token": csrf_token(client, "/routers")})


def confirm(client, text: str):
    return post(client, "/routers/import/confirm", {"csv": text})


def routers_of(app, tenant_id: int) -> list[str]:
    with app.app_context():
        return sorted(db.session.scalars(select(Router.name).where(Router.tenant_id == tenant_id)))


def imports_of(app, tenant_id: int) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(RouterImport)
                                 .where(RouterImport.tenant_id == tenant_id))


def import_id_from(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(response.headers["Location"].rsplit("/", 1)[1])


def test_the_preview_lists_every_row_with_its_errors_and_creates_nothing(app, admin_client):
    add_router(admin_client, "Depot")
    text = ("name,note,api_address\n"
            "Good one,,10.0.0.1\n"
            "-bad name,,\n"
            "Twin,,\n"
            "twin,,\n"
            "depot,,\n"
            "Bad address,,10.0.0.300\n"
            "Spaces in host,,gw 1.example\n")
    response = upload(admin_client, text)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    for line in range(2, 9):
        assert f'data-line="{line}"' in page  # every row is listed
    assert "Router names are 1 to 64 characters" in page
    assert "The same name is on line 5 of the file." in page and "The same name is on line 4 of the file." in page
    assert "You already have a router named &#39;depot&#39;." in page
    assert "“10.0.0.300” is not an IP address or host name" in page
    assert "“gw 1.example” is not an IP address or host name" in page
    assert "6 of 7 rows have errors" in page
    assert "Import 7 routers" not in page and 'action="/routers/import/confirm"' not in page
    assert routers_of(app, admin_client.tenant_id) == ["Depot"]
    assert imports_of(app, admin_client.tenant_id) == 0


def test_a_good_preview_offers_the_import_and_still_creates_nothing(app, admin_client):
    response = upload(admin_client, GOOD)
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Import 3 routers" in page and "All 3 rows can be imported" in page
    assert routers_of(app, admin_client.tenant_id) == []


def test_an_invalid_row_blocks_the_whole_import(app, admin_client):
    response = confirm(admin_client, GOOD + "-bad,,\n")
    assert response.status_code == 422
    assert "Router names are 1 to 64 characters" in response.get_data(as_text=True)
    assert routers_of(app, admin_client.tenant_id) == []
    assert imports_of(app, admin_client.tenant_id) == 0


def test_a_name_taken_between_preview_and_import_blocks_it(app, admin_client):
    assert upload(admin_client, GOOD).status_code == 200
    add_router(admin_client, "branch 2")  # someone else, meanwhile
    response = confirm(admin_client, GOOD)
    assert response.status_code == 422
    assert "You already have a router named &#39;Branch 2&#39;." in response.get_data(as_text=True)
    assert routers_of(app, admin_client.tenant_id) == ["branch 2"]


def test_a_valid_import_creates_every_router_and_they_go_active(app, admin_client, monkeypatch):
    woken = []
    wake = jobs.sync_hub.wake
    monkeypatch.setattr(jobs.sync_hub, "wake", lambda hub_id: woken.append(hub_id) or wake(hub_id))
    import_id = import_id_from(confirm(admin_client, GOOD))
    assert routers_of(app, admin_client.tenant_id) == ["Branch 1", "Branch 2", "Branch 3"]
    assert len(woken) == 1  # one wake-up for the hub, not one per router

    page = admin_client.get(f"/routers/imports/{import_id}").get_data(as_text=True)
    assert "3 routers imported" in page  # the flash
    assert 'id="import-progress"' in page and 'data-live="status"' in page
    assert '<strong class="active-count">0</strong> active of' in page
    assert '<span class="pending-count">3</span>' in page

    run_worker(app)
    fragment = admin_client.get(f"/routers/imports/{import_id}/progress", headers={"HX-Request": "true"})
    body = fragment.get_data(as_text=True)
    assert body.lstrip().startswith('<section id="import-progress"')
    assert "<html" not in body and "HX-Request" in fragment.headers["Vary"]
    assert '<strong class="active-count">3</strong> active of' in body and "Done: 3 active" in body

    with app.app_context():
        routers = {router.name: router for router in db.session.scalars(
            select(Router).where(Router.tenant_id == admin_client.tenant_id))}
        assert {router.current_configuration.status for router in routers.values()} == {Status.ACTIVE}
        assert routers["Branch 3"].note == "Depot"
        assert (routers["Branch 1"].api_address, routers["Branch 1"].api_username) == ("10.1.0.1", "portal")
        assert (routers["Branch 2"].api_address, routers["Branch 2"].api_username) == (None, None)
        assert routers["Branch 3"].api_address == "gw3.example.net" and routers["Branch 1"].api_password is None
        addresses = [router.current_configuration.address for router in routers.values()]
        assert len(set(addresses)) == 3
        items = db.session.scalars(select(RouterImportItem.router_id).where(RouterImportItem.import_id == import_id))
        assert sorted(items) == sorted(router.id for router in routers.values())
        actions = list(db.session.scalars(select(AuditEvent.action).where(
            AuditEvent.tenant_id == admin_client.tenant_id)))
        assert actions.count("router.created") == 3 and actions.count("configuration.created") == 3
        assert actions.count("routers.imported") == 1
        assert actions.count("configuration.provision.succeeded") == 3


def test_the_service_for_the_api_returns_errors_per_row(app, tenant_admin):
    tenant_id = tenant_admin[0]
    actor = Actor.system("api test")
    with app.app_context():
        refused = fleet.import_routers(actor, tenant_id, "name,api_username\nOne,portal\n-two,\n")
        assert not refused.ok
        assert refused.as_dict() == {
            "imported": False, "import_id": None, "router_ids": [], "errors": [],
            "rows": [{"line": 2, "name": "One", "note": "", "api_address": None, "api_username": "portal",
                      "errors": ["An API user needs an API address."]},
                     {"line": 3, "name": "-two", "note": "", "api_address": None, "api_username": None,
                      "errors": [refused.checked.rows[1].errors[0]]}]}
        assert "Router names are" in refused.checked.rows[1].errors[0]
        db.session.rollback()

        result = fleet.import_routers(actor, tenant_id, "\ufeffName;Note;API address\nAlpha;first;10.9.0.1\nBeta;;\n")
        assert result.ok and len(result.router_ids) == 2 and len(result.hub_ids) == 1
        db.session.commit()
        assert fleet.wake_hubs(result.hub_ids)
        assert sorted(db.session.scalars(select(Router.name).where(Router.id.in_(result.router_ids)))) == [
            "Alpha", "Beta"]
    run_worker(app)


@pytest.mark.parametrize("header", ["name,api_password", "name,Password", "name,API-Secret"])
def test_a_password_column_is_refused_and_not_shown_back(app, admin_client, header):
    response = upload(admin_client, f"{header}\nBranch,hunter2-very-secret\n")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Passwords and other secrets never go in a CSV file" in page
    assert "hunter2-very-secret" not in page and "Import" not in page.split("<h1>", 1)[1].split("</h1>")[1]
    assert confirm(admin_client, f"{header}\nBranch,hunter2\n").status_code == 422
    assert routers_of(app, admin_client.tenant_id) == []


@pytest.mark.parametrize(("text", "message"), [
    ("", "The file is empty"),
    (",,\n,\n", "no header row"),
    ("name,colour\nA,red\n", "Unknown column(s): colour"),
    ("note\nA\n", "must name a “name” column"),
    ("name\n", "a header but no routers"),
    ('name,note\nA,"unterminated\n', "cannot be read as CSV"),
])
def test_files_that_cannot_be_imported_say_why(app, admin_client, text, message):
    response = upload(admin_client, text)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True).replace("&#34;", '"')


def test_a_file_larger_than_the_subnet_is_refused(app, admin_client):
    rows = "".join(f"r{index}\n" for index in range(254))  # a /24 per tenant in tests: 253 router addresses
    response = upload(admin_client, "name\n" + rows)
    assert response.status_code == 422
    assert "Your subnet has 253 free addresses, and the file has 254 routers" in response.get_data(as_text=True)


def test_an_import_takes_returned_addresses_first(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Old"))
    run_worker(app)
    freed = configuration_of(app, router_id).address
    post(admin_client, f"/routers/{router_id}/revoke")
    run_worker(app)
    import_id_from(confirm(admin_client, "name\nNew 1\nNew 2\n"))
    with app.app_context():
        addresses = dict(db.session.execute(select(Router.name, VpnConfiguration.address)
                                            .join(VpnConfiguration, VpnConfiguration.router_id == Router.id)
                                            .where(Router.tenant_id == admin_client.tenant_id,
                                                   VpnConfiguration.status != Status.REVOKED)).all())
        assert addresses["New 1"] == freed and addresses["New 2"] != freed
        subnet_id = db.session.scalar(select(VpnConfiguration.subnet_id).where(VpnConfiguration.router_id == router_id))
        assert not db.session.scalars(select(FreeAddress).where(FreeAddress.subnet_id == subnet_id)).all()
    run_worker(app)


def test_a_read_only_support_visit_cannot_import(app, admin_client, support_user):
    client = staff_client(app, support_user)
    assert start_visit(app, client, support_user, admin_client.tenant_id).status_code == 302
    assert "Import CSV" not in client.get("/routers").get_data(as_text=True)
    assert client.get("/routers/import").status_code == 403
    assert upload(client, GOOD).status_code == 403
    assert confirm(client, GOOD).status_code == 403
    assert routers_of(app, admin_client.tenant_id) == []


def test_another_tenants_import_is_not_found(app, admin_client, other_tenant_admin):
    import_id = import_id_from(confirm(admin_client, "name\nMine\n"))
    other = staff_client(app, other_tenant_admin[1])
    assert other.get(f"/routers/imports/{import_id}").status_code == 404
    assert other.get(f"/routers/imports/{import_id}/progress").status_code == 404
    assert admin_client.get(f"/routers/imports/{import_id}").status_code == 200
    run_worker(app)


def test_the_zip_has_one_script_and_one_conf_per_active_router(app, admin_client):
    import_id_from(confirm(admin_client, GOOD))
    run_worker(app)
    pending = router_id_from(add_router(admin_client, "Not yet active"))  # no worker runs for it before the ZIP
    page = admin_client.get("/routers").get_data(as_text=True)
    assert "Import CSV" in page and "Download all (ZIP)" in page

    response = admin_client.get("/routers/download.zip")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="wireguard-routers-')
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    names = archive.namelist()
    assert len([name for name in names if name.endswith(".rsc")]) == 3
    assert len([name for name in names if name.endswith(".conf")]) == 3 and len(names) == 6
    assert all("not-yet" not in name for name in names)
    assert all(info.external_attr >> 16 == 0o600 for info in archive.infolist())
    script = next(name for name in names if name.startswith("branch-1-") and name.endswith(".rsc"))
    assert "/interface wireguard" in archive.read(script).decode()
    with app.app_context():
        downloads = db.session.scalar(select(func.count()).where(
            AuditEvent.tenant_id == admin_client.tenant_id, AuditEvent.action == "configuration.downloaded"))
        assert downloads == 6  # one event per file, as single downloads write
    assert configuration_of(app, pending).status == Status.PENDING
    run_worker(app)


def test_the_zip_without_active_routers_says_so(app, admin_client):
    response = admin_client.get("/routers/download.zip")
    assert response.status_code == 303
    assert "No router is active yet" in admin_client.get("/routers").get_data(as_text=True)


@pytest.mark.parametrize("changes", [None, "Customer asked for a re-key"])
def test_the_zip_is_refused_to_visiting_support_staff(app, admin_client, support_user, changes):
    import_id_from(confirm(admin_client, "name\nBranch\n"))
    run_worker(app)
    client = staff_client(app, support_user)
    assert start_visit(app, client, support_user, admin_client.tenant_id, changes).status_code == 302
    assert "Download all (ZIP)" not in client.get("/routers").get_data(as_text=True)
    response = client.get("/routers/download.zip")
    assert response.status_code == 403 and "PK" not in response.get_data(as_text=True)[:2]


@pytest.mark.system
def test_in_a_browser_an_import_goes_active_live_and_downloads_as_one_zip(app, chromium, tenant_admin):
    """The pages as a person uses them: file chosen, preview, import, the progress panel moving by itself."""
    from tests.conftest import served
    from tests.system.test_browser_live import Person, not_reloaded, run_worker_process

    with served(app) as base_url:
        alice = Person(chromium, base_url)
        try:
            page = alice.log_in(tenant_admin[1])
            page.get_by_role("link", name="Import CSV").click()
            page.get_by_label("CSV file").set_input_files(files=[{
                "name": "fleet.csv", "mimeType": "text/csv", "buffer": GOOD.replace("\n", "\r\n").encode()}])
            page.get_by_role("button", name="Check the file").click()
            page.get_by_role("button", name="Import 3 routers").click()
            page.wait_for_url(re.compile(re.escape(base_url) + r"/routers/imports/\d+$"))
            alice.open(page, page.url.removeprefix(base_url))  # connected: no hint is missed from here on
            panel = page.locator("#import-progress")
            assert panel.locator(".pending-count").inner_text() == "3"

            run_worker_process()  # another process provisions; its hints come back through Redis
            panel.get_by_text("Done: 3 active").wait_for()
            assert panel.locator("strong.active-count").inner_text() == "3" and not_reloaded(page)

            listing = alice.tab("/routers")
            with listing.expect_download() as download:
                listing.get_by_role("link", name="Download all (ZIP)").click()
            names = zipfile.ZipFile(download.value.path()).namelist()
            assert len(names) == 6 and "branch-3" in " ".join(names)
            assert alice.errors == []
        finally:
            alice.close()
