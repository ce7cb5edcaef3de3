"""One's own account: changing the password (other sessions end, this one stays), and the sessions page (list,
end one, end all others)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests import vectors
from tests.conftest import login, post

NEW_PASSWORD = "another long passphrase for me"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")


pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def browser(app, email: str, user_agent: str | None = None, password: str = vectors.PASSWORD):
    client = app.test_client()
    if user_agent:
        client.environ_base["HTTP_USER_AGENT"] = user_agent
    response = login(client, email, password)
    assert response.status_code == 302 and not response.headers["Location"].startswith("/login")
    return client


def change_password(client, current: str, new: str, confirm: str | None = None):
    return post(client, "/account/password", {"current_password": current, "new_password": new,
                                              "confirm": new if confirm is None else confirm},
                token_page="/account/password")


def audit_actions(app, email: str) -> list[str]:
    from portal.audit.models import AuditEvent
    from portal.extensions import db
    from portal.tenancy.models import User

    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(func.lower(User.email) == email.lower()))
        return list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.target_type == "users",
                                                                       AuditEvent.target_id == user_id)
                                       .order_by(AuditEvent.id)))


def test_account_pages_need_a_sign_in(client):
    for path in ("/account", "/account/password", "/account/sessions"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_account_pages_are_refused_while_looking_at_a_tenant(app, support_user, tenant_admin):
    from tests.web.test_users import looking_at

    support = looking_at(app, support_user, tenant_admin[0], allow_changes=True)
    for path in ("/account", "/account/password", "/account/sessions"):
        assert support.get(path).status_code == 403, path
    assert change_password(support, vectors.PASSWORD, NEW_PASSWORD).status_code == 403
    assert post(support, "/account/sessions/end-others", token_page="/routers").status_code == 403
    assert 'href="/account"' not in support.get("/routers").get_data(as_text=True)


def test_the_account_page_links_password_and_sessions(admin_client):
    page = admin_client.get("/account").get_data(as_text=True)
    assert 'href="/account/password"' in page and 'href="/account/sessions"' in page
    assert 'href="/account"' in admin_client.get("/routers").get_data(as_text=True)  # in the navigation


def test_changing_the_password_ends_the_other_sessions_but_not_this_one(app, tenant_admin):
    this, other = browser(app, tenant_admin[1]), browser(app, tenant_admin[1])
    assert other.get("/routers").status_code == 200

    response = change_password(this, vectors.PASSWORD, NEW_PASSWORD)
    assert response.status_code == 303
    page = this.get("/account/password").get_data(as_text=True)
    assert "your 1 other session(s) were signed out" in page and "This one stays signed in" in page
    assert this.get("/routers").status_code == 200
    refused = other.get("/routers")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")

    assert login(app.test_client(), tenant_admin[1]).status_code == 401
    assert browser(app, tenant_admin[1], password=NEW_PASSWORD)
    assert audit_actions(app, tenant_admin[1])[-1] == "user.password_changed"


def test_a_wrong_current_password_or_a_weak_new_one_changes_nothing(app, tenant_admin):
    this = browser(app, tenant_admin[1])
    other = browser(app, tenant_admin[1])
    wrong = change_password(this, "not my password", NEW_PASSWORD)
    assert wrong.status_code == 422
    assert 'id="current_password-error"' in wrong.get_data(as_text=True)
    weak = change_password(this, vectors.PASSWORD, "short")
    assert weak.status_code == 422 and 'id="new_password-error"' in weak.get_data(as_text=True)
    differ = change_password(this, vectors.PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "?")
    assert differ.status_code == 422 and "The two passwords differ." in differ.get_data(as_text=True)
    same = change_password(this, vectors.PASSWORD, vectors.PASSWORD)
    assert same.status_code == 422 and "different from your current one" in same.get_data(as_text=True)
    assert other.get("/routers").status_code == 200
    assert browser(app, tenant_admin[1])  # the old password still works
    assert "user.password_changed" not in audit_actions(app, tenant_admin[1])


def test_the_sessions_page_lists_sessions_and_ends_one(app, tenant_admin):
    from portal.auth.models import LoginSession
    from portal.extensions import db
    from portal.tenancy.models import User

    this = browser(app, tenant_admin[1], FIREFOX)
    phone = browser(app, tenant_admin[1], SAFARI)
    page = this.get("/account/sessions").get_data(as_text=True)
    assert "Firefox on Linux" in page and "Safari on iOS" in page
    assert page.count("(this session)") == 1
    assert page.split("(this session)")[0].rsplit("<tr", 1)[1].count("Firefox on Linux") == 1

    with app.app_context():
        user_id = db.session.scalar(select(User.id).where(User.email == tenant_admin[1]))
        phone_session = db.session.scalar(select(LoginSession.id).where(LoginSession.user_id == user_id,
                                                                        LoginSession.user_agent == SAFARI,
                                                                        LoginSession.revoked_at.is_(None)))
        current = db.session.scalar(select(LoginSession.id).where(LoginSession.user_id == user_id,
                                                                  LoginSession.user_agent == FIREFOX,
                                                                  LoginSession.revoked_at.is_(None)))
    ended = post(this, f"/account/sessions/{phone_session}/end", token_page="/account/sessions",
                 follow_redirects=True)
    assert "That session is signed out." in ended.get_data(as_text=True)
    assert "Safari on iOS" not in ended.get_data(as_text=True)
    assert phone.get("/routers").status_code == 302
    assert this.get("/routers").status_code == 200

    again = post(this, f"/account/sessions/{phone_session}/end", token_page="/account/sessions",
                 follow_redirects=True)
    assert "ended already" in again.get_data(as_text=True)
    own = post(this, f"/account/sessions/{current}/end", token_page="/account/sessions", follow_redirects=True)
    assert "log out to end it" in own.get_data(as_text=True)
    assert this.get("/routers").status_code == 200
    assert "user.session_ended" in audit_actions(app, tenant_admin[1])


def test_ending_another_users_session_ends_nothing(app, tenant_admin, other_tenant_admin):
    from portal.auth.models import LoginSession
    from portal.extensions import db
    from portal.tenancy.models import User

    mine, theirs = browser(app, tenant_admin[1]), browser(app, other_tenant_admin[1])
    with app.app_context():
        their_id = db.session.scalar(select(User.id).where(User.email == other_tenant_admin[1]))
        their_session = db.session.scalar(select(func.max(LoginSession.id)).where(LoginSession.user_id == their_id))
    response = post(mine, f"/account/sessions/{their_session}/end", token_page="/account/sessions",
                    follow_redirects=True)
    assert "ended already" in response.get_data(as_text=True)
    assert theirs.get("/routers").status_code == 200


def test_end_all_other_sessions(app, tenant_admin):
    this = browser(app, tenant_admin[1])
    others = [browser(app, tenant_admin[1]) for _ in range(2)]
    page = this.get("/account/sessions").get_data(as_text=True)
    assert "End all other sessions" in page
    response = post(this, "/account/sessions/end-others", token_page="/account/sessions", follow_redirects=True)
    assert "Every other session is signed out." in response.get_data(as_text=True)
    assert all(other.get("/routers").status_code == 302 for other in others)
    assert this.get("/routers").status_code == 200
    assert "End all other sessions" not in this.get("/account/sessions").get_data(as_text=True)
    assert "user.sessions_ended" in audit_actions(app, tenant_admin[1])
