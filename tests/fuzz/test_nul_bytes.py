"""A NUL character in a search term or an e-mail address, which the fuzz properties found: PostgreSQL refuses NUL
in text parameters (`psycopg.DataError`), so a lookup made with the raw value answered 500 there. Now a page's
query string with a NUL is refused at the door with a 400 that says why, and e-mail fields refuse control
characters next to the field, on both databases."""

from __future__ import annotations

import pytest

from tests.conftest import configuration_of, csrf_token, login, router_id_from, run_worker
from tests.fuzz.support import Browser, assert_refused_form

NUL_ADDRESS = "a\x00b@fuzz.example"

pytestmark = pytest.mark.usefixtures("forget_failed_logins")


@pytest.fixture
def browser(app) -> Browser:
    return Browser.of_new_tenant(app)


def assert_refused(response) -> None:
    assert response.status_code == 400
    assert b"NUL character" in response.data


@pytest.mark.parametrize("path, field", [("/routers", "q"), ("/openvpn/clients", "q"), ("/audit", "actor"),
                                         ("/audit", "action")])
def test_a_nul_in_a_search_term_is_not_a_server_error(browser, path, field):
    assert_refused(browser.get(path, query_string={field: "a\x00"}))


def test_a_nul_in_the_support_search_is_not_a_server_error(app, support_user):
    client = app.test_client()
    login(client, support_user)
    assert_refused(client.get("/support", query_string={"q": "\x00"}))


def test_a_nul_in_the_sign_in_address_is_not_a_server_error(app):
    client = app.test_client()
    response = client.post("/login", data={"email": NUL_ADDRESS, "password": "wrong password",
                                           "csrf_token": csrf_token(client)})
    assert_refused_form(response, "email")


def test_a_nul_in_an_invited_address_is_not_a_server_error(browser, outbox):
    assert_refused_form(browser.post("/users", {"email": NUL_ADDRESS}), "email")


def test_a_nul_in_a_link_recipient_is_not_a_server_error(app, browser, outbox):
    router_id = router_id_from(browser.post("/routers/new", {"name": "nul-link"}))
    run_worker(app)
    configuration_id = configuration_of(app, router_id).id
    assert_refused_form(browser.post(f"/links/configurations/{configuration_id}/email",
                                     {"recipient": NUL_ADDRESS, "hours": "24", "file_format": "rsc"}), "recipient")
