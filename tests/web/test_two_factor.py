"""Two factors: enrolment through the pages, sign-in with a TOTP code or a recovery code, each code once, the
roles that must have them, and the module API other areas call (`portal.auth.two_factor`)."""

from __future__ import annotations

import re
import time

import pyotp
import pytest
from sqlalchemy import func, select, text

from tests import vectors
from tests.conftest import create_staff, csrf_token, enrol_two_factor, login, post, totp_code

SECRET_ON_PAGE = re.compile(r'id="totp-secret">([A-Z2-7]{32})<')
RECOVERY_CODE = re.compile(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>")


pytestmark = pytest.mark.usefixtures("forget_failed_logins")


def user_named(email: str):
    from portal.extensions import db
    from portal.tenancy.models import User

    return db.session.scalar(select(User).where(User.email == email))


def audit_actions(app, email: str) -> list[tuple[str, dict]]:
    from portal.audit.models import AuditEvent
    from portal.extensions import db

    with app.app_context():
        user = user_named(email)
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.target_type == "users",
                                                             AuditEvent.target_id == user.id)
                                    .order_by(AuditEvent.id)).all()
        return [(event.action, event.details) for event in events]


def password_step(client, email: str, password: str = vectors.PASSWORD):
    return client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)})


def code_step(client, code: str):
    return client.post("/login/code", data={"code": code, "csrf_token": csrf_token(client, "/login/code")})


def logout(client) -> None:
    assert post(client, "/logout", token_page="/account/two-factor").status_code == 302


def code_at(secret: str, step_offset: int = 0) -> str:
    return pyotp.TOTP(secret).generate_otp(int(time.time()) // 30 + step_offset)


def test_enrolment_end_to_end_then_sign_in_with_a_code(app, admin_client, tenant_admin):
    email = tenant_admin[1]
    page = admin_client.get("/account/two-factor")
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    body = page.get_data(as_text=True)
    assert "<svg" in body and "QR code for your authenticator app" in body  # rendered here, inline
    secret = SECRET_ON_PAGE.search(body).group(1)
    assert SECRET_ON_PAGE.search(admin_client.get("/account/two-factor").get_data(as_text=True)).group(1) == secret

    wrong = post(admin_client, "/account/two-factor/confirm", {"code": "000000"}, token_page="/account/two-factor")
    assert wrong.status_code == 422 and "That code does not match" in wrong.get_data(as_text=True)

    shown = post(admin_client, "/account/two-factor/confirm", {"code": pyotp.TOTP(secret).now()},
                 token_page="/account/two-factor")
    assert shown.status_code == 200 and shown.headers["Cache-Control"] == "no-store"
    codes = RECOVERY_CODE.findall(shown.get_data(as_text=True))
    assert len(codes) == 10 and len(set(codes)) == 10
    settings = admin_client.get("/account/two-factor").get_data(as_text=True)
    assert 'id="recovery-codes-left">10<' in settings and "totp-secret" not in settings  # shown once
    assert not RECOVERY_CODE.search(settings)

    with app.app_context():
        from portal.auth.models import RecoveryCode
        from portal.extensions import db

        user = user_named(email)
        assert user.totp_secret == secret and user.totp_enabled_at is not None
        stored = db.session.execute(text("SELECT totp_secret FROM users WHERE id = :id"), {"id": user.id}).scalar()
        assert secret not in stored  # encrypted at rest
        hashes = db.session.scalars(select(RecoveryCode.code_hash).where(RecoveryCode.user_id == user.id)).all()
        assert len(hashes) == 10 and not set(hashes) & {code.replace("-", "") for code in codes}
    assert ("user.two_factor_enabled", {"email": email, "recovery_codes": 10}) in audit_actions(app, email)

    logout(admin_client)
    asked = password_step(admin_client, email)
    assert asked.status_code == 302 and asked.headers["Location"] == "/login/code"
    assert admin_client.get("/routers").status_code == 302  # not signed in before the code
    signed_in = code_step(admin_client, totp_code(app, email))
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/routers"
    assert admin_client.get("/routers").status_code == 200


def test_the_enrolment_code_cannot_sign_in_again(app, admin_client, tenant_admin):
    secret = SECRET_ON_PAGE.search(admin_client.get("/account/two-factor").get_data(as_text=True)).group(1)
    code = code_at(secret)
    assert post(admin_client, "/account/two-factor/confirm", {"code": code},
                token_page="/account/two-factor").status_code == 200
    logout(admin_client)
    password_step(admin_client, tenant_admin[1])
    assert code_step(admin_client, code).status_code == 401


def test_a_replayed_totp_code_is_refused(app, tenant_admin):
    secret = enrol_two_factor(app, tenant_admin[1])
    code = code_at(secret)
    first = app.test_client()
    assert password_step(first, tenant_admin[1]).headers["Location"] == "/login/code"
    assert code_step(first, code).status_code == 302

    replay = app.test_client()  # someone who saw the code, with the password too
    assert password_step(replay, tenant_admin[1]).headers["Location"] == "/login/code"
    refused = code_step(replay, code)
    assert refused.status_code == 401 and "used already" in refused.get_data(as_text=True)
    assert replay.get("/routers").status_code == 302
    # An older code (the previous step) is refused too once a newer one was used.
    assert code_step(replay, code_at(secret, -1)).status_code == 401


def test_verify_fresh_totp_takes_each_code_once_and_no_recovery_code(app, support_user):
    from portal.auth import two_factor
    from portal.extensions import db

    with app.app_context():
        user = user_named(support_user)
        codes = two_factor.regenerate_recovery_codes(vectors_actor(), user)
        db.session.commit()
        code = code_at(user.totp_secret)
        assert two_factor.verify_fresh_totp(user, code)
        db.session.commit()
        assert not two_factor.verify_fresh_totp(user, code)
        assert not two_factor.verify_fresh_totp(user, "12345")  # not six digits
        assert not two_factor.verify_fresh_totp(user, codes[0])  # a recovery code is not a fresh code
        assert two_factor.enabled(user) and two_factor.required_for(user)
        assert two_factor.verify_login_code(user, codes[0].upper().replace("-", " "))  # typed loosely
        db.session.commit()
        assert not two_factor.verify_login_code(user, codes[0])
        assert two_factor.verify_login_code(user, code_at(user.totp_secret, 1))
        db.session.rollback()


def vectors_actor():
    from portal.audit.service import Actor

    return Actor.system("test")


def test_sign_in_with_a_recovery_code_works_once(app, admin_client, tenant_admin):
    email = tenant_admin[1]
    enrol_two_factor(app, email)
    wrong = post(admin_client, "/account/two-factor/recovery-codes", {"password": "not my password at all"},
                 token_page="/account/two-factor")
    assert wrong.status_code == 422 and "That is not your password" in wrong.get_data(as_text=True)
    made = post(admin_client, "/account/two-factor/recovery-codes", {"password": vectors.PASSWORD},
                token_page="/account/two-factor")
    assert made.status_code == 200
    codes = RECOVERY_CODE.findall(made.get_data(as_text=True))
    assert len(codes) == 10
    logout(admin_client)

    password_step(admin_client, email)
    signed_in = code_step(admin_client, codes[3])
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/routers"
    assert "9 left" in admin_client.get("/routers").get_data(as_text=True)
    logout(admin_client)

    password_step(admin_client, email)
    assert code_step(admin_client, codes[3]).status_code == 401
    assert admin_client.get("/routers").status_code == 302
    actions = [action for action, _ in audit_actions(app, email)]
    assert "user.recovery_codes_regenerated" in actions and "user.recovery_code_used" in actions
    assert ("user.recovery_code_used", {"email": email, "recovery_codes_left": 9}) in audit_actions(app, email)


def test_the_code_step_expires(app, tenant_admin):
    enrol_two_factor(app, tenant_admin[1])
    client = app.test_client()
    password_step(client, tenant_admin[1])
    with client.session_transaction() as session:
        session["two_factor_pending"] = {**session["two_factor_pending"],
                                         "at": session["two_factor_pending"]["at"] - 301}
    response = client.get("/login/code")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "took too long" in client.get("/login").get_data(as_text=True)
    # Without a password step there is no code step at all.
    assert app.test_client().get("/login/code").headers["Location"] == "/login"


def test_wrong_codes_are_throttled_like_passwords(app, tenant_admin):
    email = tenant_admin[1]
    enrol_two_factor(app, email)
    client = app.test_client()
    password_step(client, email)
    for _ in range(app.config["PORTAL_LOGIN_MAX_FAILURES"]):
        assert code_step(client, "000000").status_code == 401
    throttled = code_step(client, totp_code(app, email))
    assert throttled.status_code == 429
    assert "Try again in 30 seconds" in throttled.get_data(as_text=True)
    assert 29 <= int(throttled.headers["Retry-After"]) <= 30
    assert client.get("/routers").status_code == 302
    # The password step of the same account from the same address waits too.
    assert password_step(app.test_client(), email).status_code == 429


def test_a_role_that_requires_two_factors_sees_only_enrolment_until_it_has_them(app):
    from portal.auth.views import ENROLMENT_OPEN

    email = create_staff(app, "platform_admin", two_factor=False)
    client = app.test_client()
    assert login(client, email).status_code == 302  # signed in: password only, nothing to ask yet
    pages = [rule.rule for rule in app.url_map.iter_rules()
             if "GET" in rule.methods and not rule.arguments and rule.endpoint not in ENROLMENT_OPEN]
    assert "/admin/tenants" in pages and "/routers" in pages and "/" in pages
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302 and response.headers["Location"] == "/account/two-factor", page
    htmx = client.get("/admin/tenants", headers={"HX-Request": "true"})
    assert htmx.status_code == 403 and "must sign in with two factors" in htmx.get_data(as_text=True)
    api = client.get("/admin/tenants", headers={"Accept": "application/json"})
    assert api.status_code == 403 and "must sign in with two factors" in api.get_json()["error"]["message"]
    sneaky = post(client, "/admin/tenants", {"name": "sneaky"}, token_page="/account/two-factor")
    assert sneaky.status_code == 302 and sneaky.headers["Location"] == "/account/two-factor"

    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "must sign in with two factors" in page
    secret = SECRET_ON_PAGE.search(page).group(1)
    assert post(client, "/account/two-factor/confirm", {"code": code_at(secret)},
                token_page="/account/two-factor").status_code == 200
    assert client.get("/admin/tenants").status_code == 200

    # Their role requires it: it cannot be turned off.
    refused = post(client, "/account/two-factor/disable", {"password": vectors.PASSWORD},
                   token_page="/account/two-factor")
    assert refused.status_code == 422 and "cannot be turned off" in refused.get_data(as_text=True)
    with app.app_context():
        assert user_named(email).totp_enabled_at is not None


def test_logout_stays_open_to_a_user_who_must_enrol(app):
    client = app.test_client()
    assert login(client, create_staff(app, "support", two_factor=False)).status_code == 302
    assert post(client, "/logout", token_page="/account/two-factor").headers["Location"] == "/login"
    assert client.get("/account/two-factor").status_code == 302  # logged out: to the login page
    assert client.get("/account/two-factor").headers["Location"].startswith("/login")


def test_staff_fixtures_sign_in_through_the_code_step(app, platform_admin, support_user):
    for email in (platform_admin, support_user, platform_admin):  # twice in one 30 s step: no wait
        client = app.test_client()
        assert password_step(client, email).headers["Location"] == "/login/code"
        client = app.test_client()
        response = login(client, email)
        assert response.status_code == 302 and response.headers["Location"] != "/account/two-factor"


def test_a_user_whose_role_allows_it_can_turn_two_factors_off(app, admin_client, tenant_admin):
    email = tenant_admin[1]
    enrol_two_factor(app, email)
    refused = post(admin_client, "/account/two-factor/disable", {"password": "wrong password entirely"},
                   token_page="/account/two-factor")
    assert refused.status_code == 422
    done = post(admin_client, "/account/two-factor/disable", {"password": vectors.PASSWORD},
                token_page="/account/two-factor")
    assert done.status_code == 303
    with app.app_context():
        from portal.auth.models import RecoveryCode
        from portal.extensions import db

        user = user_named(email)
        assert user.totp_secret is None and user.totp_enabled_at is None
        assert not db.session.scalar(select(func.count()).select_from(RecoveryCode)
                                     .where(RecoveryCode.user_id == user.id))
    assert "user.two_factor_disabled" in [action for action, _ in audit_actions(app, email)]
    logout(admin_client)
    assert login(admin_client, email).headers["Location"] == "/routers"  # the password alone again


def test_reset_clears_the_second_factor_and_ends_the_users_sessions(app, platform_admin):
    from portal.audit.service import Actor
    from portal.auth import two_factor
    from portal.extensions import db

    client = app.test_client()
    assert login(client, platform_admin).status_code == 302
    assert client.get("/admin/tenants").status_code == 200
    with app.app_context():
        user = user_named(platform_admin)
        two_factor.reset(Actor.system("test"), user)
        db.session.commit()
        assert user.totp_secret is None and user.totp_last_step is None and not two_factor.enabled(user)
    assert client.get("/admin/tenants").status_code == 302  # signed out
    assert ("user.two_factor_reset", {"email": platform_admin}) in audit_actions(app, platform_admin)
    again = app.test_client()
    assert login(again, platform_admin).status_code == 302  # the password only: no code to ask
    assert again.get("/admin/tenants").headers["Location"] == "/account/two-factor"  # and enrol again


def test_the_roles_setting_names_real_roles(app):
    from portal import create_app
    from portal.config import ConfigError

    with pytest.raises(ConfigError, match="PORTAL_REQUIRE_2FA_FOR names no such role: platform-admin"):
        create_app({"REQUIRE_2FA_FOR": ["platform-admin"]})
    assert app.config["PORTAL_REQUIRE_2FA_FOR"] == ["platform_admin", "support"]


def test_make_run_prints_staff_accounts_that_sign_in_with_the_printed_code(tmp_path, capsys):
    import subprocess
    import sys

    from portal import create_app
    from portal.devserver import ROOT, prepare_database
    from portal.extensions import db

    demo = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"})
    try:
        prepare_database(demo)
        printed = capsys.readouterr().out
        accounts = {role: (email, password) for role, email, password in re.findall(
            r"^  (Tenant admin|Platform admin|Support): (\S+)  password: (\S+)$", printed, re.MULTILINE)}
        assert set(accounts) == {"Tenant admin", "Platform admin", "Support"}, printed
        assert accounts["Support"][0] == "support@demo.example"
        commands = re.findall(r"^    (\.venv/bin/python -c .+)$", printed, re.MULTILINE)
        assert len(commands) == 2 and len(re.findall(r"two-factor secret: [A-Z2-7]{32} ", printed)) == 2

        email, password = accounts["Support"]
        argv = [sys.executable, "-c", commands[1].split(" -c ", 1)[1].strip('"')]
        code = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
        client = demo.test_client()
        asked = password_step(client, email, password)
        assert asked.headers["Location"] == "/login/code"
        assert code_step(client, code).status_code == 302
        assert client.get("/account/two-factor").status_code == 200  # enrolled already: no detour

        prepare_database(demo)  # once only
        assert "Demo accounts" not in capsys.readouterr().out
    finally:
        with demo.app_context():
            db.engine.dispose()
