"""Router names and notes from anyone, through the form and the API: no 5xx; what is accepted keeps its name, is
shown escaped, and downloads as a `.rsc` the RouterOS allow-list passes and a `.conf` with only wg-quick's keys;
what is refused says why and creates nothing; the same for CSV imports and any JSON body. Search terms and
other query values on the routers list and the audit log: no 5xx, never echoed as markup.

The properties hold whatever the name rule is: they ask the portal, then check the answer's consequences."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from portal.extensions import db
from portal.wireguard.models import Router
from tests.api.conftest import Api
from tests.conftest import configuration_of, router_id_from, run_worker
from tests.fuzz.support import (
    MARKUP,
    Browser,
    api_of_new_tenant,
    assert_conf_safe,
    assert_download,
    assert_listed,
    assert_not_server_error,
    assert_refused_form,
    assert_refused_json,
    assert_rsc_safe,
    assert_shown_escaped,
    count,
    fuzz,
    hostile_text,
    names,
    notes,
    path_of,
    same_name,
)


@pytest.fixture
def browser(app) -> Browser:
    return Browser.of_new_tenant(app)


@pytest.fixture
def api(app, monkeypatch) -> Api:
    return api_of_new_tenant(app, monkeypatch)


def stored_router(app, router_id: int) -> Router:
    with app.app_context():
        router = db.session.get(Router, router_id)
        db.session.expunge(router)
        return router


def assert_downloads_safe(get, rsc_path: str, conf_path: str) -> None:
    assert_rsc_safe(assert_download(get(rsc_path), "rsc"))
    assert_conf_safe(assert_download(get(conf_path), "conf"))


@fuzz(examples=60)
@given(name=names(), note=notes())
def test_a_router_added_through_the_form_is_safe_everywhere_or_refused(app, browser, name, note):
    before = count(app, Router, browser.tenant_id)
    response = browser.post("/routers/new", {"name": name, "note": note})
    assert_not_server_error(response)
    event(f"form answered {response.status_code}")
    if response.status_code != 303:
        assert_refused_form(response, "name", "note")
        assert count(app, Router, browser.tenant_id) == before
        return
    router = stored_router(app, router_id_from(response))
    assert same_name(router.name, name) and router.note == note.strip()
    page = browser.get(f"/routers/{router.id}").get_data(as_text=True)
    assert_shown_escaped(page, router.name)
    if router.note:
        assert_shown_escaped(page, router.note)
    configuration_id = configuration_of(app, router.id).id
    run_worker(app)  # files are offered once the configuration is active
    assert_downloads_safe(browser.get, f"/configurations/{configuration_id}/download.rsc",
                          f"/configurations/{configuration_id}/download.conf")


@fuzz(examples=60)
@given(name=names(), note=notes(), new_name=names())
def test_a_router_added_and_renamed_through_the_api_is_safe_everywhere_or_refused(app, api, name, note, new_name):
    before = count(app, Router, api.tenant_id)
    response = api.post("/api/routers", {"name": name, "note": note})
    assert_not_server_error(response)
    event(f"API answered {response.status_code}")
    if response.status_code != 201:
        assert_refused_json(response)
        assert count(app, Router, api.tenant_id) == before
        return
    router = response.get_json()
    assert same_name(router["name"], name) and router["note"] == note.strip()
    run_worker(app)  # files are offered once the configuration is active
    downloads = api.get(f"/api/routers/{router['id']}").get_json()["configuration"]["downloads"]
    assert_downloads_safe(api.get, path_of(downloads["mikrotik"]), path_of(downloads["linux"]))

    renamed = api.patch(f"/api/routers/{router['id']}", {"name": new_name})
    assert_not_server_error(renamed)
    event(f"rename answered {renamed.status_code}")
    if renamed.status_code == 200:
        assert same_name(renamed.get_json()["name"], new_name)
        assert_downloads_safe(api.get, path_of(downloads["mikrotik"]), path_of(downloads["linux"]))
    else:
        assert_refused_json(renamed)
        assert stored_router(app, router["id"]).name == router["name"]


def csv_text(rows: list[tuple[str, str]], delimiter: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter)
    writer.writerow(["name", "note"])
    writer.writerows(rows)
    return out.getvalue()


@fuzz(examples=40)
@given(rows=st.lists(st.tuples(names(), notes(max_size=60)), min_size=1, max_size=3),
       delimiter=st.sampled_from([",", ";"]))
def test_routers_imported_from_a_csv_file_are_safe_everywhere_or_none_is(app, api, rows, delimiter):
    before = count(app, Router, api.tenant_id)
    response = api.post("/api/routers/import", {"csv": csv_text(rows, delimiter)})
    assert_not_server_error(response)
    event(f"import answered {response.status_code}")
    if response.status_code != 201:
        assert_refused_json(response)
        assert count(app, Router, api.tenant_id) == before
        return
    router_ids = response.get_json()["router_ids"]
    rows = [row for row in rows if any(cell.strip() for cell in row)]  # a blank line of the file is no router
    assert len(router_ids) == len(rows) and count(app, Router, api.tenant_id) == before + len(rows)
    run_worker(app)  # files are offered once the configurations are active
    for router_id, (name, _) in zip(router_ids, rows, strict=True):
        router = api.get(f"/api/routers/{router_id}").get_json()
        assert same_name(router["name"], name)
        downloads = router["configuration"]["downloads"]
        assert_downloads_safe(api.get, path_of(downloads["mikrotik"]), path_of(downloads["linux"]))


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=5), children, max_size=3), max_leaves=6)


@fuzz(examples=60)
@given(body=st.dictionaries(st.sampled_from(["name", "note", "tenant_id", "id", ""]) | st.text(max_size=8),
                            JSON_VALUES | names(), max_size=4) | JSON_VALUES)
def test_any_json_body_for_a_new_router_gets_an_answer_and_never_half_a_router(app, api, body):
    """Wrong types, extra keys, arrays, nulls, huge numbers: a 201 or a 4xx with an error code, never a 5xx."""
    before = count(app, Router, api.tenant_id)
    response = api.client.post("/api/routers", json=body, headers=api.headers())
    assert_not_server_error(response)
    if response.status_code == 201:
        assert count(app, Router, api.tenant_id) == before + 1
    else:
        assert_refused_json(response)
        assert count(app, Router, api.tenant_id) == before


@fuzz(examples=80)
@given(term=hostile_text(), htmx=st.booleans())
def test_any_search_term_gets_the_routers_list_without_markup_from_it(browser, term, htmx):
    response = browser.get("/routers", query_string={"q": term, "sort": term, "dir": term, "page": term},
                           headers={"HX-Request": "true"} if htmx else {})
    assert_listed(response, term)


AUDIT_FILTERS = ("page", "actor", "action", "target", "since", "until")


@fuzz(examples=40)
@given(values=st.fixed_dictionaries({}, optional={name: hostile_text() for name in AUDIT_FILTERS}))
def test_any_filter_of_the_audit_log_gets_an_answer_without_markup_from_it(browser, values):
    response = browser.get("/audit", query_string=values)
    assert_not_server_error(response)
    for value in values.values():
        if any(payload in value for payload in MARKUP):
            assert value not in response.get_data(as_text=True)


@fuzz(examples=20)
@given(payload=st.sampled_from(MARKUP), before=st.text(st.characters(exclude_characters="\x00"), max_size=10))
def test_a_search_term_is_echoed_only_as_text(browser, payload, before):
    term = (before + payload).strip()
    page = browser.get("/routers", query_string={"q": term}).get_data(as_text=True)
    assert_shown_escaped(page, term)


@fuzz(examples=40)
@given(term=hostile_text(max_size=100))
def test_any_search_term_in_the_api_gets_a_page_or_a_refusal(api, term):
    response = api.get("/api/routers", query_string={"q": term})
    assert_not_server_error(response)
    if response.status_code != 200:
        assert_refused_json(response)
