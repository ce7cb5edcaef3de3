"""E-mail addresses and token names from anyone: invitations, e-mailed download links and API tokens. No 5xx;
an accepted address gets exactly one e-mail with that one recipient (no header smuggled in) and is shown
escaped; a refused one says why beside the field, and neither a row nor an e-mail is made."""

from __future__ import annotations

from email import policy

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from portal.api.models import ApiToken
from portal.tenancy.models import User
from tests.conftest import configuration_of, router_id_from, run_worker
from tests.fuzz.support import (
    INJECTIONS,
    Browser,
    assert_not_server_error,
    assert_refused_form,
    assert_shown_escaped,
    count,
    fuzz,
    hostile_text,
    names,
)

pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def addresses() -> st.SearchStrategy[str]:
    """Valid addresses (of every shape RFC 5322 allows), with a header or markup spliced in, and anything."""
    spliced = st.builds(lambda address, payload: address + payload, st.emails(),
                        st.sampled_from(["\r\nBcc: spy@evil.example", "\nCc: spy@evil.example", ",spy@evil.example",
                                         " <spy@evil.example>", *INJECTIONS]))
    return st.one_of(st.emails(), spliced, hostile_text())


@pytest.fixture
def browser(app) -> Browser:
    return Browser.of_new_tenant(app, token_page="/users")


def assert_one_mail_to(outbox, before: int, address: str) -> None:
    """One more e-mail, to exactly the one mailbox `address` names (RFC 5322: `"q"@x` is q@x, `a(note)@x` is a@x),
    with no Cc or Bcc."""
    messages = outbox.messages()
    assert len(messages) == before + 1
    message = messages[-1]
    [to] = message.get_all("To")
    [meant] = policy.default.header_factory("To", address).addresses
    assert [mailbox.addr_spec.lower() for mailbox in to.addresses] == [meant.addr_spec.lower()]
    assert message["Cc"] is None and message["Bcc"] is None


@fuzz(examples=25)  # each accepted invitation hashes a password with scrypt (0.4 s)
@given(email=addresses())
def test_an_invitation_goes_to_one_address_or_is_refused(app, browser, outbox, email):
    users, mails = count(app, User, browser.tenant_id), len(outbox.messages())
    response = browser.post("/users", {"email": email})
    assert_not_server_error(response)
    event(f"answered {response.status_code}")
    if response.status_code != 303:
        assert_refused_form(response, "email")
        assert count(app, User, browser.tenant_id) == users and len(outbox.messages()) == mails
        return
    address = email.strip().lower()
    assert count(app, User, browser.tenant_id) == users + 1
    assert_one_mail_to(outbox, mails, address)
    assert_shown_escaped(browser.get("/users").get_data(as_text=True), address)


@pytest.fixture
def configuration_id(app, browser) -> int:
    """An active configuration of the browser's tenant, to e-mail links to."""
    response = browser.post("/routers/new", {"name": "mailed"})
    run_worker(app)
    return configuration_of(app, router_id_from(response)).id


@fuzz(examples=40)
@given(recipient=addresses(), hours=st.sampled_from(["24"] * 4 + ["0", "-1", "99999999999999999999", "x"]))
def test_a_download_link_goes_to_one_address_or_is_refused(app, browser, outbox, configuration_id, recipient,
                                                           hours):
    mails = len(outbox.messages())
    response = browser.post(f"/links/configurations/{configuration_id}/email",
                            {"recipient": recipient, "hours": hours, "file_format": "rsc"})
    assert_not_server_error(response)
    event(f"answered {response.status_code}")
    if response.status_code != 303:
        assert_refused_form(response, "recipient", "hours")
        assert len(outbox.messages()) == mails
        return
    assert_one_mail_to(outbox, mails, recipient.strip())


@fuzz(examples=50)
@given(name=names(), scope=st.sampled_from(["read", "write"] * 4 + ["admin", ""]),
       expiry=st.sampled_from(["90", "never"] * 4 + ["0", "", "-5", "x"]))
def test_an_api_token_name_is_kept_and_shown_escaped_or_refused(app, browser, name, scope, expiry):
    before = count(app, ApiToken, browser.tenant_id)
    response = browser.post("/api-tokens", {"name": name, "scope": scope, "expires_in_days": expiry})
    assert_not_server_error(response)
    event(f"answered {response.status_code}")
    if response.status_code != 201:
        assert_refused_form(response, "name", "scope", "expires_in_days")
        assert count(app, ApiToken, browser.tenant_id) == before
        return
    assert count(app, ApiToken, browser.tenant_id) == before + 1
    assert_shown_escaped(response.get_data(as_text=True), name.strip())
    assert_shown_escaped(browser.get("/api-tokens").get_data(as_text=True), name.strip())
