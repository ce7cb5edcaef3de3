"""Router management for tenant admins (issue 14): edit, delete, the list's filters and sort, bulk revoke and ZIP,
names beyond ASCII with messages that say what is wrong; and the router page's panels computing only what they
show (issue 15, part 7)."""

from __future__ import annotations

import html
import io
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from portal import live
from portal.audit.models import AuditEvent
from portal.audit.service import Actor
from portal.extensions import db
from portal.links.models import DownloadLink
from portal.routeros.models import RouterPush
from portal.types import utcnow
from portal.wireguard import fleet
from portal.wireguard.fleet_models import RouterImportItem
from portal.wireguard.models import KIND, Hub, Router, Status, TrafficSample, VpnConfiguration
from portal.wireguard.render import WG_QUICK_INTERFACE
from tests.conftest import add_router, configuration_of, login, post, router_id_from, run_worker
from tests.routeros.fake_routeros import RouterState
from tests.routeros.rsc_reader import run_script

NAME_ERROR = re.compile(r'<p class="field-error" id="name-error">(.*?)</p>', re.S)


def name_error(response) -> str:
    match = NAME_ERROR.search(response.get_data(as_text=True))
    assert match, response.get_data(as_text=True)
    return html.unescape(match.group(1))


def events(app, tenant_id: int, action: str) -> list[AuditEvent]:
    with app.app_context():
        found = list(db.session.scalars(select(AuditEvent).where(AuditEvent.tenant_id == tenant_id,
                                                                AuditEvent.action == action)))
        db.session.expunge_all()
        return found


def router_row(app, router_id: int) -> Router | None:
    with app.app_context():
        router = db.session.get(Router, router_id)
        if router is not None:
            db.session.expunge(router)
        return router


def set_status(app, router_id: int, status: str) -> None:
    with app.app_context():
        db.session.execute(update(VpnConfiguration).where(VpnConfiguration.router_id == router_id)
                           .values(status=status))
        db.session.commit()


def revoked_router(app, client, name: str) -> int:
    router_id = router_id_from(add_router(client, name))
    run_worker(app)
    post(client, f"/routers/{router_id}/revoke")
    run_worker(app)
    assert configuration_of(app, router_id).status == Status.REVOKED
    return router_id


def listed_names(page: str) -> list[str]:
    return [html.unescape(name) for name in re.findall(r'<a class="clip" id="router-name-\d+" title="[^"]*" '
                                                       r'href="/routers/\d+">([^<]*)</a>', page)]


# Editing ----------------------------------------------------------------------------------------------------

def test_a_router_is_renamed_and_its_note_changed_with_an_audit_event(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Old name", note="first note"))
    form = admin_client.get(f"/routers/{router_id}/edit").get_data(as_text=True)
    assert 'value="Old name"' in form and "first note" in form

    response = post(admin_client, f"/routers/{router_id}/edit", {"name": "New name", "note": "second note"})
    assert response.status_code == 303 and response.headers["Location"] == f"/routers/{router_id}"
    router = router_row(app, router_id)
    assert (router.name, router.note) == ("New name", "second note")
    assert "Router New name saved." in admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    [updated] = events(app, admin_client.tenant_id, "router.updated")
    assert updated.target_id == router_id
    assert updated.details == {"name": "New name", "previous_name": "Old name", "note_changed": True}


def test_saving_unchanged_values_writes_no_event(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Same"))
    assert post(admin_client, f"/routers/{router_id}/edit", {"name": " Same ", "note": ""}).status_code == 303
    assert events(app, admin_client.tenant_id, "router.updated") == []


def test_a_rename_to_another_routers_name_in_any_case_is_refused_beside_the_field(app, admin_client):
    add_router(admin_client, "Alpha")
    router_id = router_id_from(add_router(admin_client, "Beta"))
    response = post(admin_client, f"/routers/{router_id}/edit", {"name": "ALPHA", "note": ""})
    assert response.status_code == 422
    assert name_error(response) == "You already have a router named 'ALPHA'."
    assert router_row(app, router_id).name == "Beta"
    # A router may change the case of its own name.
    assert post(admin_client, f"/routers/{router_id}/edit", {"name": "BETA", "note": ""}).status_code == 303
    assert router_row(app, router_id).name == "BETA"


def test_an_htmx_edit_with_errors_gets_the_form_back_and_success_redirects(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Htmx edit"))
    bad = post(admin_client, f"/routers/{router_id}/edit", {"name": "a;b"}, headers={"HX-Request": "true"})
    body = bad.get_data(as_text=True)
    assert bad.status_code == 422 and body.lstrip().startswith('<form id="router-form"')
    assert f'hx-post="/routers/{router_id}/edit"' in body and ">Save</button>" in body
    good = post(admin_client, f"/routers/{router_id}/edit", {"name": "Htmx edited"}, headers={"HX-Request": "true"})
    assert good.headers["HX-Redirect"] == f"/routers/{router_id}"


def test_the_list_links_each_router_to_its_edit_page(admin_client):
    router_id = router_id_from(add_router(admin_client, "Linked"))
    page = admin_client.get("/routers").get_data(as_text=True)
    assert f'href="/routers/{router_id}/edit" aria-describedby="router-name-{router_id}">Edit</a>' in page


# Names ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "message"), [
    ("", "Give the router a name."),
    ("   ", "Give the router a name."),
    ("x" * 200, "At most 64 characters (this one has 200)."),
    ("a;b", "“;” is not allowed: use letters, digits, spaces, dots, dashes and underscores."),
    ('x"; /system reset', "“\"” is not allowed: use letters, digits, spaces, dots, dashes and underscores."),
    ("Café/Zürich", "“/” is not allowed: use letters, digits, spaces, dots, dashes and underscores."),
    ("zero\u200bwidth", "U+200B (zero width space) is not allowed: use letters, digits, spaces, dots, dashes and "
                        "underscores."),
    ("right\u202eleft", "U+202E (right-to-left override) is not allowed: use letters, digits, spaces, dots, dashes "
                        "and underscores."),
    ("tab\there", "U+0009 (a control character) is not allowed: use letters, digits, spaces, dots, dashes and "
                  "underscores."),
    ("a\u0301\u0301", "U+0301 (combining acute accent) is not allowed: use letters, digits, spaces, dots, dashes "
                      "and underscores."),
    ("-dash", "Router names are 1 to 64 characters, starting with a letter or digit: this one starts with “-”."),
])
def test_a_bad_name_gets_a_message_that_says_exactly_what_is_wrong(app, admin_client, name, message):
    response = add_router(admin_client, name)
    assert response.status_code == 422
    assert name_error(response) == message
    with app.app_context():
        assert db.session.scalar(select(func.count()).where(Router.tenant_id == admin_client.tenant_id)) == 0


@pytest.mark.parametrize("name", ["Café Zürich 2", "Łódź-1", "Αθήνα 3", "東京 4", "São_Paulo.5", "Ñandú"])
def test_names_take_letters_beyond_ascii(app, admin_client, name):
    router_id = router_id_from(add_router(admin_client, name))
    assert router_row(app, router_id).name == name
    assert html.escape(name) in admin_client.get("/routers").get_data(as_text=True)


def test_a_decomposed_accent_is_stored_composed(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Cafe\u0301"))
    assert router_row(app, router_id).name == "Caf\u00e9"


def test_an_accented_name_gives_a_valid_rsc_and_ascii_file_names(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Café Zürich 2"))
    run_worker(app)
    configuration = configuration_of(app, router_id)
    rsc = admin_client.get(f"/configurations/{configuration.id}/download.rsc")
    disposition = rsc.headers["Content-Disposition"]
    assert disposition == f'attachment; filename="caf-z-rich-2-cfg{configuration.id}.rsc"' and disposition.isascii()
    script = rsc.get_data(as_text=True)
    assert script.isascii() and "# Router: Caf? Z?rich 2" in script
    state = RouterState()
    state.seed()
    run_script(state, script)  # every line is RouterOS the reader knows: nothing broke out of a comment
    conf = admin_client.get(f"/configurations/{configuration.id}/download.conf")
    filename = conf.headers["Content-Disposition"].split('filename="')[1].rstrip('"')
    assert WG_QUICK_INTERFACE.fullmatch(filename.removesuffix(".conf")) and filename.isascii()


def test_the_csv_import_takes_accented_names_and_refuses_them_twice(app, admin_client):
    tenant_id = admin_client.tenant_id
    with app.app_context():
        result = fleet.import_routers(Actor.system("test"), tenant_id, "name\nŁódź-1\nCafé Zürich 2\n")
        assert result.ok
        db.session.commit()
        again = fleet.check(tenant_id, "name\nŁódź-1\n")
        assert again.rows[0].errors == ["You already have a router named 'Łódź-1'."]
        db.session.rollback()
    run_worker(app)


# Deleting ---------------------------------------------------------------------------------------------------

def test_a_router_with_a_live_configuration_is_not_deleted(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Still live"))
    page = admin_client.get(f"/routers/{router_id}/delete").get_data(as_text=True)
    assert "Still live cannot be deleted yet" in page and f'href="/routers/{router_id}/revoke"' in page
    response = post(admin_client, f"/routers/{router_id}/delete")
    assert response.status_code == 303 and response.headers["Location"] == f"/routers/{router_id}/delete"
    shown = admin_client.get(f"/routers/{router_id}/delete").get_data(as_text=True)
    assert "Still live has a live configuration: revoke it first, then delete the router." in shown
    assert router_row(app, router_id) is not None
    assert events(app, admin_client.tenant_id, "router.deleted") == []
    run_worker(app)


def test_deleting_a_revoked_router_removes_it_and_everything_that_hangs_on_it(app, admin_client):
    router_id = revoked_router(app, admin_client, "Gone soon")
    keep_id = router_id_from(add_router(admin_client, "Stays"))
    with app.app_context():
        configuration = db.session.get(Router, router_id).configurations[0]
        db.session.add_all([
            TrafficSample(configuration_id=configuration.id, taken_at=utcnow(), rx_bytes=1, tx_bytes=2),
            DownloadLink(kind="email", token_hash="d" * 64, tenant_id=configuration.tenant_id,
                         configuration_id=configuration.id, file_format="rsc", recipient="tech@example.net",
                         expires_at=utcnow() + timedelta(days=1)),
            RouterPush(tenant_id=configuration.tenant_id, router_id=router_id, configuration_id=configuration.id,
                       kind="push", status="active"),
        ])
        db.session.flush()
        batch = fleet.RouterImport(tenant_id=configuration.tenant_id, created_by_label="test", row_count=1)
        db.session.add(batch)
        db.session.flush()
        db.session.add(RouterImportItem(import_id=batch.id, router_id=router_id))
        db.session.commit()
        configuration_id = configuration.id
    confirm = admin_client.get(f"/routers/{router_id}/delete").get_data(as_text=True)
    assert "Delete Gone soon?" in confirm and "This cannot be undone." in confirm

    response = post(admin_client, f"/routers/{router_id}/delete")
    assert response.status_code == 303 and response.headers["Location"] == "/routers"
    listing = admin_client.get("/routers").get_data(as_text=True)
    assert "Router Gone soon deleted." in listing and listed_names(listing) == ["Stays"]
    assert admin_client.get(f"/routers/{router_id}").status_code == 404
    with app.app_context():
        assert db.session.get(VpnConfiguration, configuration_id) is None
        for model, column in ((TrafficSample, TrafficSample.configuration_id),
                              (DownloadLink, DownloadLink.configuration_id), (RouterPush, RouterPush.router_id),
                              (RouterImportItem, RouterImportItem.router_id)):
            assert db.session.scalar(select(func.count()).select_from(model).where(
                column == (router_id if model in (RouterPush, RouterImportItem) else configuration_id))) == 0
        assert db.session.get(Router, keep_id) is not None
        kept = db.session.scalars(select(AuditEvent.action).where(AuditEvent.target_type == "routers",
                                                                  AuditEvent.target_id == router_id)).all()
    assert kept == ["router.created", "router.deleted"]  # the audit log keeps the router's events
    [deleted] = events(app, admin_client.tenant_id, "router.deleted")
    assert deleted.details == {"name": "Gone soon", "configurations": [configuration_id]}
    run_worker(app)


def test_every_row_that_points_at_a_router_or_configuration_is_deleted_with_it():
    """A new foreign key to routers or vpn_configurations must be added to `service._router_dependents`."""
    pointing = {(foreign_key.parent.table.name, foreign_key.parent.name)
                for table in db.metadata.tables.values() for foreign_key in table.foreign_keys
                if foreign_key.column.table.name in ("routers", "vpn_configurations")}
    assert pointing == {("vpn_configurations", "router_id"), ("traffic_samples", "configuration_id"),
                        ("download_links", "configuration_id"), ("router_pushes", "router_id"),
                        ("router_pushes", "configuration_id"), ("router_import_routers", "router_id")}


# Another tenant ---------------------------------------------------------------------------------------------

def test_another_tenants_router_is_not_found(app, admin_client, other_tenant_admin):
    router_id = revoked_router(app, admin_client, "Mine only")
    other = app.test_client()
    assert login(other, other_tenant_admin[1]).status_code == 302
    for path in (f"/routers/{router_id}/edit", f"/routers/{router_id}/delete"):
        assert other.get(path).status_code == 404
        assert post(other, path, {"name": "Theirs"}).status_code == 404
    assert post(other, "/routers/bulk/revoke", {"router": [router_id], "confirmed": "yes"}).status_code == 303
    assert post(other, "/routers/bulk/download.zip", {"router": [router_id]}).status_code == 303
    assert router_row(app, router_id).name == "Mine only"
    assert events(app, other_tenant_admin[0], "configuration.downloaded") == []


# The list ---------------------------------------------------------------------------------------------------

def test_names_sort_regardless_of_case(admin_client):
    for name in ("bravo", "Alpha", "charlie", "Delta"):
        add_router(admin_client, name)
    assert listed_names(admin_client.get("/routers").get_data(as_text=True)) == ["Alpha", "bravo", "charlie", "Delta"]
    descending = admin_client.get("/routers?sort=name&dir=desc").get_data(as_text=True)
    assert listed_names(descending) == ["Delta", "charlie", "bravo", "Alpha"]
    by_added = admin_client.get("/routers?sort=created&dir=asc").get_data(as_text=True)
    assert listed_names(by_added) == ["bravo", "Alpha", "charlie", "Delta"]


def test_notes_and_long_names_show_on_one_line_with_the_whole_text_on_hover(admin_client):
    long_name = "A" + "b" * 63
    add_router(admin_client, long_name, note="Rack 4, top shelf\ncall Ana before a reboot")
    page = admin_client.get("/routers").get_data(as_text=True)
    assert 'class="clip" id="router-name-' in page and f'title="{long_name}"' in page
    assert '<span class="clip" title="Rack 4, top shelf\ncall Ana before a reboot">' in page


@pytest.fixture
def fleet_in_every_state(app, admin_client):
    """Routers named for their state: active, pending, failed, revoked, none (no configuration at all)."""
    ids = {state: router_id_from(add_router(admin_client, f"{state}-router"))
           for state in ("active", "pending", "failed", "revoked", "rotating")}
    set_status(app, ids["active"], Status.ACTIVE)
    set_status(app, ids["failed"], Status.FAILED)
    set_status(app, ids["revoked"], Status.REVOKED)
    set_status(app, ids["rotating"], Status.ROTATING)
    with app.app_context():
        bare = Router(tenant_id=admin_client.tenant_id, name="none-router", note="")
        db.session.add(bare)
        db.session.commit()
        ids["none"] = bare.id
    yield ids
    with app.app_context():  # nothing for a later test's worker to provision
        db.session.execute(update(VpnConfiguration).where(VpnConfiguration.tenant_id == admin_client.tenant_id)
                           .values(status=Status.REVOKED))
        db.session.commit()


@pytest.mark.parametrize(("status", "expected"), [
    ("active", ["active-router"]),
    ("in_progress", ["pending-router", "rotating-router"]),
    ("failed", ["failed-router"]),
    ("revoked", ["revoked-router"]),
    ("none", ["none-router"]),
    ("anything else", ["active-router", "failed-router", "none-router", "pending-router", "revoked-router",
                       "rotating-router"]),
])
def test_the_list_filters_by_status(admin_client, fleet_in_every_state, status, expected):
    page = admin_client.get("/routers", query_string={"status": status}).get_data(as_text=True)
    assert listed_names(page) == expected


def test_filters_combine_with_search_sort_pager_and_live_refresh(app, admin_client, fleet_in_every_state):
    page = admin_client.get("/routers?status=in_progress&q=ROT&sort=name&dir=desc").get_data(as_text=True)
    assert listed_names(page) == ["rotating-router"]
    assert 'data-live-src="/routers?q=ROT&amp;sort=name&amp;dir=desc&amp;status=in_progress"' in page
    assert '<option value="in_progress" selected>pending or in progress</option>' in page
    app.config["PORTAL_PAGE_SIZE"] = 1
    try:
        first = admin_client.get("/routers?status=in_progress").get_data(as_text=True)
    finally:
        app.config["PORTAL_PAGE_SIZE"] = 25
    assert "Page 1 of 2 (2 routers)" in first
    assert 'href="/routers?sort=name&amp;dir=asc&amp;status=in_progress&amp;page=2">Next</a>' in first
    nothing = admin_client.get("/routers?status=failed&q=active").get_data(as_text=True)
    assert "No router matches “active” with these filters." in nothing


def test_the_hub_filter_offers_the_hubs_the_tenant_uses(app, admin_client, fleet_in_every_state):
    page = admin_client.get("/routers").get_data(as_text=True)
    assert 'id="router-hub"' not in page  # one hub: nothing to choose
    with app.app_context():
        other_hub = Hub(name=f"second hub {admin_client.tenant_id}", endpoint_host="hub2.example.net",
                        endpoint_port=51820, interface="wg0", public_key="B" * 43 + "=", driver="none",
                        accepts_new_tenants=False)
        unused = Hub(name=f"unused hub {admin_client.tenant_id}", endpoint_host="hub3.example.net",
                     endpoint_port=51820, interface="wg0", public_key="C" * 43 + "=", driver="none",
                     accepts_new_tenants=False)
        db.session.add_all([other_hub, unused])
        db.session.flush()
        moved = [fleet_in_every_state["failed"], fleet_in_every_state["revoked"]]
        moves = db.session.execute(update(VpnConfiguration).where(VpnConfiguration.router_id.in_(moved))
                                   .values(hub_id=other_hub.id).returning(VpnConfiguration.id, VpnConfiguration.status))
        for configuration_id, status in moves:  # the hints the product's own changes publish
            live.status_changed(KIND, configuration_id, admin_client.tenant_id, status)
        db.session.commit()
        other_id, unused_id = other_hub.id, unused.id
    page = admin_client.get("/routers").get_data(as_text=True)
    assert f'<option value="{other_id}"' in page and f'<option value="{unused_id}"' not in page
    on_other = admin_client.get(f"/routers?hub={other_id}").get_data(as_text=True)
    assert listed_names(on_other) == ["failed-router", "revoked-router"]
    both = admin_client.get(f"/routers?hub={other_id}&status=failed").get_data(as_text=True)
    assert listed_names(both) == ["failed-router"]
    ignored = admin_client.get(f"/routers?hub={unused_id}").get_data(as_text=True)  # not the tenant's: no filter
    assert len(listed_names(ignored)) == 6
    assert admin_client.get("/routers?hub=99999999999999999999&page=99999999999999999999").status_code == 200


# Bulk actions -----------------------------------------------------------------------------------------------

def test_selected_routers_are_revoked_after_a_confirmation_listing_what_is_skipped(app, admin_client):
    first = router_id_from(add_router(admin_client, "Bulk one"))
    second = router_id_from(add_router(admin_client, "Bulk two"))
    run_worker(app)
    done = revoked_router(app, admin_client, "Bulk done")
    listing = admin_client.get("/routers").get_data(as_text=True)
    assert f'<label class="visually-hidden" for="select-router-{first}">Select Bulk one</label>' in listing
    assert "Revoke selected…" in listing and "Download selected (ZIP)" in listing

    confirm = post(admin_client, "/routers/bulk/revoke", {"router": [first, second, done]})
    page = confirm.get_data(as_text=True)
    assert confirm.status_code == 200 and "Revoke the configurations of 2 routers?" in page
    assert "Bulk done: no live configuration" in page and "Revoke 2 configurations" in page
    assert configuration_of(app, first).status == Status.ACTIVE  # the confirmation changes nothing

    response = post(admin_client, "/routers/bulk/revoke", {"router": [first, second], "confirmed": "yes"})
    assert response.status_code == 303 and response.headers["Location"] == "/routers"
    assert "Revoking 2 configurations." in admin_client.get("/routers").get_data(as_text=True)
    assert {configuration_of(app, router_id).status for router_id in (first, second)} == {Status.REVOKING}
    assert len(events(app, admin_client.tenant_id, "configuration.revoke.requested")) == 3
    run_worker(app)
    assert {configuration_of(app, router_id).status for router_id in (first, second)} == {Status.REVOKED}

    again = post(admin_client, "/routers/bulk/revoke", {"router": [first], "confirmed": "yes"})
    assert again.status_code == 303
    assert "Nothing was revoked. Skipped: Bulk one (no live configuration)." in \
        admin_client.get("/routers").get_data(as_text=True)


def test_a_bulk_action_refuses_an_empty_or_too_large_selection(app, admin_client):
    add_router(admin_client, "Bulk limit")
    assert post(admin_client, "/routers/bulk/revoke", {}).status_code == 303
    assert "Select at least one router first." in admin_client.get("/routers").get_data(as_text=True)
    response = post(admin_client, "/routers/bulk/revoke", {"router": list(range(1, 502))})
    assert response.status_code == 303
    assert "Select at most 500 routers at a time (you selected 501)." in \
        admin_client.get("/routers").get_data(as_text=True)
    assert post(admin_client, "/routers/bulk/revoke", {"router": ["x", 2**40]}).status_code == 303
    run_worker(app)


def test_the_selected_routers_download_as_one_zip_audited_per_file(app, admin_client):
    chosen = router_id_from(add_router(admin_client, "Zipped"))
    other = router_id_from(add_router(admin_client, "Not chosen"))
    run_worker(app)
    response = post(admin_client, "/routers/bulk/download.zip", {"router": [chosen]})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert response.headers["Cache-Control"] == "no-store"
    names = zipfile.ZipFile(io.BytesIO(response.data)).namelist()
    chosen_id = configuration_of(app, chosen).id
    assert sorted(names) == [f"wg-zipped-{chosen_id}.conf", f"zipped-cfg{chosen_id}.rsc"]
    assert len(events(app, admin_client.tenant_id, "configuration.downloaded")) == 2
    set_status(app, other, Status.FAILED)
    refused = post(admin_client, "/routers/bulk/download.zip", {"router": [other]})
    assert refused.status_code == 303
    assert "None of the selected routers is active" in admin_client.get("/routers").get_data(as_text=True)


# The router page's panels -----------------------------------------------------------------------------------

@contextmanager
def statements_run(app) -> Iterator[list[str]]:
    """The SQL statements the app runs inside the block."""
    with app.app_context():
        engine = db.engine
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads(statements: list[str], table: str) -> bool:
    return any(f"FROM {table}" in statement for statement in statements)


@pytest.mark.parametrize(("panel", "absent"), [
    ("configuration", ("audit_events", "traffic_samples")),
    ("steps", ("traffic_samples",)),
    ("traffic", ("audit_events",)),
])
def test_a_panel_reads_only_what_it_shows(app, admin_client, panel, absent):
    router_id = router_id_from(add_router(admin_client, f"Panel {panel}"))
    run_worker(app)
    with app.app_context():
        hub = db.session.get(VpnConfiguration, configuration_of(app, router_id).id).hub
        hub_id, driver, hub.driver = hub.id, hub.driver, "ssh"  # traffic is charted for managed hubs only
        db.session.commit()
    try:
        with statements_run(app) as fragment_statements:
            fragment = admin_client.get(f"/routers/{router_id}/{panel}", headers={"HX-Request": "true"})
        with statements_run(app) as page_statements:
            page = admin_client.get(f"/routers/{router_id}/{panel}")  # no htmx: the whole page
    finally:
        with app.app_context():
            db.session.get(Hub, hub_id).driver = driver
            db.session.commit()
    assert fragment.status_code == 200 and "<html" not in fragment.get_data(as_text=True)
    assert [table for table in absent if reads(fragment_statements, table)] == []
    assert "<html" in page.get_data(as_text=True)
    assert reads(page_statements, "audit_events") and reads(page_statements, "traffic_samples")
