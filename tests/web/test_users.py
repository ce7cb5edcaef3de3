"""User management: invitations by e-mail and their one-time links, deactivation, roles, password links, two
factors; platform admins for everyone at /admin/users, tenant admins for their own tenant at /users."""

from __future__ import annotations

import os
from datetime import timedelta
from itertools import count

import pytest
from sqlalchemy import func, select

from tests import vectors
from tests.conftest import create_tenant_admin, login, post, totp_code

NEW_PASSWORD = "a long new passphrase for the portal"
_numbers = count(1)


pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def new_email(prefix: str = "invitee") -> str:
    return f"{prefix}-{os.getpid()}-{next(_numbers)}@users.example"


def signed_in(app, email: str, password: str = vectors.PASSWORD):
    client = app.test_client()
    response = login(client, email, password)
    assert response.status_code == 302 and not response.headers["Location"].startswith("/login"), \
        response.get_data(as_text=True)
    return client


def signed_in_colleague(app, admin_client, prefix: str):
    """Another admin of `admin_client`'s tenant, signed in: (e-mail, their client, their user id)."""
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    colleague = new_email(prefix)
    with app.app_context():
        service.create_user(Actor.system("test"), colleague, vectors.PASSWORD, Role.TENANT_ADMIN,
                            admin_client.tenant_id)
        db.session.commit()
    return colleague, signed_in(app, colleague), user_named(app, colleague).id


def user_named(app, email: str):
    from portal.extensions import db
    from portal.tenancy.models import User

    with app.app_context():
        user = db.session.scalar(select(User).where(func.lower(User.email) == email.lower()))
        if user is not None:
            db.session.expunge(user)
        return user


def audit_actions(app, target_id: int) -> list[str]:
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.action).where(AuditEvent.target_type == "users",
                                                                       AuditEvent.target_id == target_id)
                                       .order_by(AuditEvent.id)))


def set_password_through(app, link: str, password: str = NEW_PASSWORD):
    """An anonymous browser opens the link and chooses a password; the POST's response."""
    browser = app.test_client()
    page = browser.get(link)
    assert page.status_code == 200 and "choose your password" in page.get_data(as_text=True).lower()
    return post(browser, link, {"password": password, "confirm": password}, token_page=link)


def test_platform_admin_invites_a_support_user_and_a_tenant_admin_who_set_their_passwords(
        app, platform_admin, tenant_admin, outbox):
    admin = signed_in(app, platform_admin)
    support_email, tenant_email = new_email("support"), new_email("admin")

    invited = post(admin, "/admin/users", {"email": support_email, "role": "support", "tenant_id": "0"},
                   token_page="/admin/users")
    assert invited.status_code == 303, invited.get_data(as_text=True)
    page = admin.get("/admin/users").get_data(as_text=True)
    assert f"An invitation for {support_email} was written to" in page and ".eml" in page
    assert support_email in page and "invited" in page

    message = outbox.last(support_email)
    link = outbox.link(support_email)
    assert link.startswith("/invite/")
    assert link in message.get_body(("html",)).get_content()  # both parts carry the link
    assert message["Subject"] == "You are invited to the VPN portal"

    invited = post(admin, "/admin/users", {"email": tenant_email, "role": "tenant_admin",
                                           "tenant_id": str(tenant_admin[0])}, token_page="/admin/users")
    assert invited.status_code == 303
    tenant_user = user_named(app, tenant_email)
    assert (tenant_user.role.value, tenant_user.tenant_id) == ("tenant_admin", tenant_admin[0])

    # Before choosing a password, nobody can sign in to the account.
    assert login(app.test_client(), support_email, "any password at all").status_code == 401

    for email in (support_email, tenant_email):
        done = set_password_through(app, outbox.link(email))
        assert done.status_code == 303 and done.headers["Location"] == "/login"
    # The support user goes on to enrol two factors (its role requires them); the tenant admin is in.
    assert login(app.test_client(), support_email, NEW_PASSWORD).status_code == 302
    assert signed_in(app, tenant_email, NEW_PASSWORD).get("/routers").status_code == 200

    support_user = user_named(app, support_email)
    assert audit_actions(app, support_user.id) == ["user.invited", "user.password_set"]
    # Their page shows them as active now, no longer invited.
    page = admin.get(f"/admin/users/{support_user.id}").get_data(as_text=True)
    assert "status-active" in page and "status-pending" not in page


def test_an_invitation_link_works_once(app, admin_client, outbox):
    email = new_email()
    assert post(admin_client, "/users", {"email": email}, token_page="/users").status_code == 303
    link = outbox.link(email)
    assert set_password_through(app, link).status_code == 303

    again = app.test_client()
    gone = again.get(link)
    assert gone.status_code == 410 and "used already" in gone.get_data(as_text=True)
    assert gone.headers["Cache-Control"] == "no-store"
    # A form kept open in another tab cannot use it either.
    refused = again.post(link, data={"password": "another long passphrase", "confirm": "another long passphrase"})
    assert refused.status_code in (400, 410)
    assert signed_in(app, email, NEW_PASSWORD)


def test_an_expired_or_unknown_link_is_refused(app, admin_client, outbox):
    from portal.auth.models import AccountToken
    from portal.extensions import db

    email = new_email()
    post(admin_client, "/users", {"email": email}, token_page="/users")
    link = outbox.link(email)
    with app.app_context():
        token = db.session.scalar(select(AccountToken).where(AccountToken.user_id == user_named(app, email).id))
        token.expires_at -= timedelta(hours=app.config["PORTAL_INVITE_HOURS"] + 1)
        db.session.commit()
    browser = app.test_client()
    expired = browser.get(link)
    assert expired.status_code == 410 and "expired" in expired.get_data(as_text=True)
    assert post(browser, "/login", {"email": email, "password": NEW_PASSWORD}, token_page="/login").status_code == 401

    assert browser.get("/invite/" + "x" * 43).status_code == 404
    assert browser.get("/invite/short").status_code == 404
    assert browser.get(link.replace("/invite/", "/password-reset/")).status_code == 404  # a link has one purpose


def test_the_new_password_must_be_strong_and_typed_twice(app, admin_client, outbox):
    email = new_email()
    post(admin_client, "/users", {"email": email}, token_page="/users")
    link = outbox.link(email)
    browser = app.test_client()
    differ = post(browser, link, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD + "!"}, token_page=link)
    assert differ.status_code == 422 and "The two passwords differ." in differ.get_data(as_text=True)
    short = post(browser, link, {"password": "short", "confirm": "short"}, token_page=link)
    assert short.status_code == 422 and 'class="field-error"' in short.get_data(as_text=True)
    assert browser.get(link).status_code == 200  # the link still works
    assert set_password_through(app, link).status_code == 303


def test_a_tenant_admin_invites_admins_of_its_own_tenant_only(app, admin_client, other_tenant_admin, outbox):
    email = new_email()
    # Fields of the platform form are ignored: the invitee is a tenant admin of the inviter's tenant.
    response = post(admin_client, "/users", {"email": email, "role": "platform_admin",
                                             "tenant_id": str(other_tenant_admin[0])}, token_page="/users")
    assert response.status_code == 303
    invited = user_named(app, email)
    assert (invited.role.value, invited.tenant_id) == ("tenant_admin", admin_client.tenant_id)
    listing = admin_client.get("/users").get_data(as_text=True)
    assert email in listing and other_tenant_admin[1] not in listing


def test_inviting_an_address_that_exists_is_refused_next_to_the_field(app, admin_client, tenant_admin, outbox):
    response = post(admin_client, "/users", {"email": tenant_admin[1].upper()}, token_page="/users")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="email-error"' in page and "exists already" in page
    assert outbox.messages() == []
    bad = post(admin_client, "/users", {"email": "not an address"}, token_page="/users")
    assert bad.status_code == 422 and 'id="email-error"' in bad.get_data(as_text=True)


def test_deactivation_refuses_the_old_cookie_and_reactivation_lets_the_user_back(app, admin_client, outbox):
    colleague, theirs, user_id = signed_in_colleague(app, admin_client, "colleague")

    response = post(admin_client, f"/users/{user_id}/deactivate", token_page="/users")
    assert response.status_code == 303 and response.headers["Location"] == f"/users/{user_id}"
    assert "is deactivated" in admin_client.get(f"/users/{user_id}").get_data(as_text=True)
    assert theirs.get("/routers").status_code == 302  # the old cookie, on its next request
    assert login(app.test_client(), colleague).status_code == 401

    assert post(admin_client, f"/users/{user_id}/reactivate", token_page="/users").status_code == 303
    assert signed_in(app, colleague).get("/routers").status_code == 200
    actions = audit_actions(app, user_id)
    assert actions.count("user.access_changed") == 2


def test_nobody_deactivates_themselves(app, admin_client, tenant_admin):
    own = user_named(app, tenant_admin[1])
    response = post(admin_client, f"/users/{own.id}/deactivate", token_page="/users", follow_redirects=True)
    assert "cannot deactivate or reactivate your own account" in response.get_data(as_text=True)
    assert user_named(app, tenant_admin[1]).active
    assert admin_client.get("/routers").status_code == 200


def test_a_tenant_admin_cannot_see_or_touch_another_tenants_users_or_staff(app, admin_client, other_tenant_admin,
                                                                         platform_admin):
    for email in (other_tenant_admin[1], platform_admin):
        user_id = user_named(app, email).id
        assert admin_client.get(f"/users/{user_id}").status_code == 404
        for action in ("deactivate", "reactivate", "send-password-link", "reset-two-factor"):
            assert post(admin_client, f"/users/{user_id}/{action}", token_page="/users").status_code == 404
        assert user_named(app, email).active
    listing = admin_client.get("/users").get_data(as_text=True)
    assert other_tenant_admin[1] not in listing and platform_admin not in listing
    # The platform pages are not theirs at all.
    assert admin_client.get("/admin/users").status_code == 403
    other_id = user_named(app, other_tenant_admin[1]).id
    assert post(admin_client, f"/admin/users/{other_id}/deactivate", token_page="/users").status_code == 403


def looking_at(app, staff_email: str, tenant_id: int, allow_changes: bool):
    """A staff member's browser, looking at the tenant through an impersonation started on the support pages."""
    client = signed_in(app, staff_email)
    start = f"/support/tenants/{tenant_id}/start"
    data = {"reason": "ticket 4711", "code": totp_code(app, staff_email)}
    if allow_changes:
        data.update(allow_changes="y", changes_reason="the customer asked us to")
    response = post(client, start, data, token_page=start)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def test_staff_looking_at_a_tenant_cannot_manage_its_users_even_with_changes_allowed(
        app, support_user, platform_admin, tenant_admin, outbox):
    target = user_named(app, tenant_admin[1]).id
    support = looking_at(app, support_user, tenant_admin[0], allow_changes=True)
    listing = support.get("/users")
    assert listing.status_code == 403 and "changing users or passwords" in listing.get_data(as_text=True)
    assert 'href="/users"' not in support.get("/routers").get_data(as_text=True)  # no Users link for them
    for action in ("deactivate", "send-password-link", "reset-two-factor"):
        assert post(support, f"/users/{target}/{action}", token_page="/routers").status_code == 403
    assert post(support, "/users", {"email": new_email()}, token_page="/routers").status_code == 403
    assert user_named(app, tenant_admin[1]).active and outbox.messages() == []

    admin = looking_at(app, platform_admin, tenant_admin[0], allow_changes=False)
    assert post(admin, f"/admin/users/{target}/deactivate", token_page="/routers").status_code == 403
    assert post(admin, "/admin/users", {"email": new_email(), "role": "support", "tenant_id": "0"},
                token_page="/routers").status_code == 403
    assert user_named(app, tenant_admin[1]).active and outbox.messages() == []


def test_staff_cannot_use_a_tenants_user_pages(app, support_user, tenant_admin):
    support = signed_in(app, support_user)
    target = user_named(app, tenant_admin[1]).id
    assert support.get("/users").status_code in (302, 403)
    assert post(support, f"/users/{target}/deactivate", token_page="/account").status_code == 403
    assert user_named(app, tenant_admin[1]).active


def test_a_platform_admin_changes_a_role_and_the_users_sessions_end(app, platform_admin, tenant_admin):
    admin = signed_in(app, platform_admin)
    theirs = signed_in(app, tenant_admin[1])
    target = user_named(app, tenant_admin[1]).id

    missing_tenant = post(admin, f"/admin/users/{target}/role", {"role": "tenant_admin", "tenant_id": "0"},
                          token_page=f"/admin/users/{target}")
    assert missing_tenant.status_code == 422 and 'id="tenant_id-error"' in missing_tenant.get_data(as_text=True)

    changed = post(admin, f"/admin/users/{target}/role", {"role": "support", "tenant_id": str(tenant_admin[0])},
                   token_page=f"/admin/users/{target}")
    assert changed.status_code == 303
    user = user_named(app, tenant_admin[1])
    assert (user.role.value, user.tenant_id) == ("support", None)  # staff belong to no tenant
    assert theirs.get("/routers").status_code == 302
    assert "user.access_changed" in audit_actions(app, target)

    own = user_named(app, platform_admin).id
    refused = post(admin, f"/admin/users/{own}/role", {"role": "support", "tenant_id": "0"},
                   token_page=f"/admin/users/{own}", follow_redirects=True)
    assert "cannot change your own role" in refused.get_data(as_text=True)
    assert user_named(app, platform_admin).role.value == "platform_admin"


def test_the_platform_list_shows_role_tenant_two_factors_and_last_sign_in(app, platform_admin, tenant_admin):
    admin = signed_in(app, platform_admin)
    signed_in(app, tenant_admin[1])
    page = admin.get("/admin/users").get_data(as_text=True)
    row = page.split(f">{tenant_admin[1]}</a>")[1].split("</tr>")[0]
    assert "Tenant admin" in row and "not enrolled" in row and "UTC" in row  # the sign-in time
    own = page.split(f">{platform_admin}</a>")[1].split("</tr>")[0]
    assert "Platform admin" in own and "enrolled" in own.replace("not enrolled", "")


def test_a_password_reset_link_sets_a_new_password_and_ends_the_users_sessions(app, admin_client, outbox):
    colleague, theirs, user_id = signed_in_colleague(app, admin_client, "forgetful")

    sent = post(admin_client, f"/users/{user_id}/send-password-link", token_page="/users", follow_redirects=True)
    assert f"A password reset link for {colleague} was written to" in sent.get_data(as_text=True)
    link = outbox.link(colleague)
    assert link.startswith("/password-reset/")
    assert outbox.last(colleague)["Subject"] == "Set a new password for the VPN portal"
    assert theirs.get("/routers").status_code == 200  # sending it changes nothing yet

    browser = app.test_client()
    assert "Choose a new password" in browser.get(link).get_data(as_text=True)
    assert post(browser, link, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, token_page=link).status_code == 303
    assert theirs.get("/routers").status_code == 302  # using it ended their sessions
    assert login(app.test_client(), colleague).status_code == 401
    assert signed_in(app, colleague, NEW_PASSWORD)
    assert audit_actions(app, user_id)[-2:] == ["user.password_reset_sent", "user.password_set"]


def test_a_new_link_replaces_the_old_and_an_invitee_gets_a_new_invitation(app, admin_client, outbox):
    email = new_email()
    post(admin_client, "/users", {"email": email}, token_page="/users")
    first = outbox.link(email)
    user_id = user_named(app, email).id
    assert post(admin_client, f"/users/{user_id}/send-password-link", token_page="/users").status_code == 303
    second = outbox.link(email)
    assert second.startswith("/invite/") and second != first  # never chose a password: invited again
    assert app.test_client().get(first).status_code == 410
    assert set_password_through(app, second).status_code == 303
    assert "user.invite_resent" in audit_actions(app, user_id)


def test_no_password_link_for_a_deactivated_user(app, admin_client, outbox):
    _, other = create_tenant_admin(app)
    from portal.audit.service import Actor
    from portal.extensions import db
    from portal.tenancy import service
    from portal.tenancy.models import Role

    email = new_email()
    with app.app_context():
        user = service.create_user(Actor.system("test"), email, vectors.PASSWORD, Role.TENANT_ADMIN,
                                   admin_client.tenant_id)
        user.active = False
        db.session.commit()
        user_id = user.id
    response = post(admin_client, f"/users/{user_id}/send-password-link", token_page="/users", follow_redirects=True)
    assert "reactivate the account first" in response.get_data(as_text=True)
    assert outbox.messages(email) == []


def test_a_platform_admin_resets_a_users_two_factors(app, platform_admin, support_user):
    from portal.auth import two_factor
    from portal.extensions import db
    from portal.tenancy.models import User

    admin = signed_in(app, platform_admin)
    theirs = signed_in(app, support_user)
    target = user_named(app, support_user).id
    page = admin.get(f"/admin/users/{target}").get_data(as_text=True)
    assert "Reset two factors" in page
    response = post(admin, f"/admin/users/{target}/reset-two-factor", token_page=f"/admin/users/{target}",
                    follow_redirects=True)
    assert "two factors are reset" in response.get_data(as_text=True)
    with app.app_context():
        assert not two_factor.enabled(db.session.get(User, target))
    assert theirs.get("/support").status_code == 302  # signed out
    own = user_named(app, platform_admin).id
    refused = post(admin, f"/admin/users/{own}/reset-two-factor", token_page="/admin/users", follow_redirects=True)
    assert "Reset your own two factors from your account page" in refused.get_data(as_text=True)
