"""OpenVPN client names from anyone, through the form and the API: no 5xx; an accepted client's certificate name
reaches the server's script as exactly one argument of the SSH command line, and its `.ovpn` holds only the
portal's directives and the credential blocks; a refused name says why and creates nothing. Search terms too.

The OpenVPN server is the API tests' fake script (tests/api/conftest.py), recording each command line; the
client's jobs run in a real worker."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from portal.extensions import db
from portal.openvpn.drivers import OpenVpnDriver
from portal.openvpn.models import CLIENT_NAME, Status, VpnClient
from tests.api.conftest import Api, FakeScript
from tests.conftest import run_worker, serve_openvpn_through
from tests.fuzz.support import (
    MARKUP,
    Browser,
    api_of_new_tenant,
    assert_download,
    assert_listed,
    assert_not_server_error,
    assert_ovpn_safe,
    assert_refused_form,
    assert_refused_json,
    assert_shown_escaped,
    count,
    fuzz,
    hostile_text,
    names,
    path_of,
    same_name,
)


@dataclass
class RecordingScript(FakeScript):
    """The fake server script, keeping each command line as the SSH session would send it (`portal.ssh`: the
    argv joined with shlex.join, so that no argument is ever shell syntax)."""

    command_lines: list[str] = field(default_factory=list)

    def run(self, argv, stdin=None):
        self.command_lines.append(shlex.join(argv))
        return super().run(argv, stdin)


def assert_one_argument(command_line: str, argv: list[str]) -> None:
    """The shell on the server splits the command line back into exactly `argv`."""
    assert shlex.split(command_line) == argv, command_line


@pytest.fixture
def script(app, monkeypatch) -> RecordingScript:
    """An OpenVPN server open to new clients, reached through a recording fake script."""
    recorder = RecordingScript()
    serve_openvpn_through(app, monkeypatch, recorder)
    return recorder


@pytest.fixture
def browser(app, script) -> Browser:
    return Browser.of_new_tenant(app, token_page="/openvpn/clients/new")


@pytest.fixture
def api(app, script, monkeypatch) -> Api:
    return api_of_new_tenant(app, monkeypatch)


def provisioned(app, script: RecordingScript, client_id: int) -> VpnClient:
    """Run the client's job; the client, after checking the command line its certificate was created with."""
    script.command_lines.clear()
    run_worker(app)
    with app.app_context():
        client = db.session.get(VpnClient, client_id)
        db.session.expunge(client)
    assert client.status == Status.ACTIVE, client.last_error
    [create] = [line for line in script.command_lines if " create " in line]
    argv = shlex.split(create)
    assert argv[1:] == ["create", client.common_name] and CLIENT_NAME.fullmatch(client.common_name)
    return client


@fuzz(examples=30)
@given(name=names())
def test_a_client_added_through_the_form_is_safe_everywhere_or_refused(app, browser, script, name):
    before = count(app, VpnClient, browser.tenant_id)
    response = browser.post("/openvpn/clients/new", {"name": name})
    assert_not_server_error(response)
    event(f"form answered {response.status_code}")
    if response.status_code != 303:
        assert_refused_form(response, "name")
        assert count(app, VpnClient, browser.tenant_id) == before
        return
    client = provisioned(app, script, int(response.headers["Location"].rsplit("/", 1)[1]))
    assert same_name(client.name, name)
    assert_shown_escaped(browser.get(f"/openvpn/clients/{client.id}").get_data(as_text=True), client.name)
    assert_ovpn_safe(assert_download(browser.get(f"/openvpn/clients/{client.id}/download.ovpn"), "ovpn"))


@fuzz(examples=30)
@given(name=names())
def test_a_client_added_through_the_api_is_safe_everywhere_or_refused(app, api, script, name):
    before = count(app, VpnClient, api.tenant_id)
    response = api.post("/api/openvpn/clients", {"name": name})
    assert_not_server_error(response)
    event(f"API answered {response.status_code}")
    if response.status_code != 202:  # accepted: the certificate is made in the background
        assert_refused_json(response)
        assert count(app, VpnClient, api.tenant_id) == before
        return
    client = provisioned(app, script, response.get_json()["id"])
    assert same_name(client.name, name)
    download = api.get(path_of(api.get(f"/api/openvpn/clients/{client.id}").get_json()["download"]))
    assert_ovpn_safe(assert_download(download, "ovpn"))


@fuzz(examples=150)
@given(common_name=names(), base_dir=st.sampled_from(["/etc/openvpn/portal", "/srv/o-v.p_n"]))
def test_the_driver_passes_a_name_as_one_argument_or_runs_nothing(common_name, base_dir):
    """Whatever reaches the driver (the service makes common names, but a bug there must not become a shell
    injection): refused before anything runs, or exactly one argument of the command line."""
    recorder = RecordingScript()
    driver = OpenVpnDriver(recorder, base_dir)
    for operation in (driver.create, driver.revoke):
        try:
            operation(common_name)
        except ValueError:
            event("refused")
            assert recorder.command_lines == []
            return
    event("ran")
    create, revoke = recorder.command_lines
    assert_one_argument(create, [f"{base_dir}/bin/ovpn-client", "create", common_name])
    assert_one_argument(revoke, [f"{base_dir}/bin/ovpn-client", "revoke", common_name])


@fuzz(examples=40)
@given(term=hostile_text(), htmx=st.booleans())
def test_any_search_term_gets_the_clients_list(browser, term, htmx):
    response = browser.get("/openvpn/clients", query_string={"q": term, "page": term},
                           headers={"HX-Request": "true"} if htmx else {})
    assert_listed(response, term)


@fuzz(examples=10)
@given(payload=st.sampled_from(MARKUP))
def test_a_client_search_term_is_echoed_only_as_text(browser, payload):
    assert_shown_escaped(browser.get("/openvpn/clients", query_string={"q": payload}).get_data(as_text=True), payload)


@fuzz(examples=30)
@given(term=hostile_text(max_size=100), status=hostile_text(max_size=10))
def test_any_search_term_in_the_api_gets_a_page_or_a_refusal(api, term, status):
    response = api.get("/api/openvpn/clients", query_string={"q": term, "status": status})
    assert_not_server_error(response)
    if response.status_code != 200:
        assert_refused_json(response)
