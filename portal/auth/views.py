"""Login (password, then a second factor for users who have one), logout, and the two-factor account page."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from flask import Blueprint, flash, g, jsonify, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from portal import live
from portal.actions import first_read, save_form
from portal.auth import sessions, two_factor
from portal.auth.forms import ConfirmCodeForm, CurrentPasswordForm, LoginCodeForm, LoginForm
from portal.auth.service import authenticate, count_failure, login_succeeded, throttled, wait_text
from portal.config import ConfigError
from portal.extensions import db, login_manager
from portal.htmx import wants_fragment
from portal.live.server import SESSION_KEY
from portal.tenancy.access import not_while_impersonating, request_actor
from portal.tenancy.models import Role, User

blueprint = Blueprint("auth", __name__)
# Between a right password and the second factor: {user_id, at (epoch seconds), next}, in the signed session.
PENDING_KEY = "two_factor_pending"
PENDING_SECONDS = 300
ENROL_FIRST = ("Your role must sign in with two factors. Set up an authenticator app on this page before "
               "you go on.")
# What a user who must enrol may still open.
ENROLMENT_OPEN = frozenset({"auth.login", "auth.login_code", "auth.logout", "static", "auth.two_factor",
                            "auth.two_factor_confirm", "auth.two_factor_recovery_codes",
                            "auth.two_factor_disable"})


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user only while the cookie's session is live on the server (logout or deactivation end it)."""
    found = first_read(lambda: sessions.user_for(session.get(SESSION_KEY), int(user_id)))
    if found is None:
        return None
    user, g.login_session_id = found  # what impersonation and the live layer key on
    return user


@login_manager.unauthorized_handler
def unauthorized():
    login_url = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
    if wants_fragment():
        response = make_response("", 401)
        response.headers["HX-Redirect"] = login_url  # a login page must not be swapped into a fragment
        return response
    return redirect(login_url)


def home_for(user: User) -> str:
    homes = {Role.PLATFORM_ADMIN: "tenancy.tenants", Role.SUPPORT: "support.home"}
    return url_for(homes.get(user.role, "wireguard.routers"))


def safe_next(target: str | None) -> str | None:
    """Only same-site paths: an open redirect after login is a phishing tool."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return None
    return target


@blueprint.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    form = LoginForm()
    status, retry_after = 200, None
    if form.validate_on_submit():
        result = authenticate(form.email.data, form.password.data, request.remote_addr or "-")
        if result.user is not None:
            target = safe_next(request.args.get("next")) or home_for(result.user)
            if two_factor.enabled(result.user):
                # Not signed in yet: the code comes first, within PENDING_SECONDS.
                session.pop(PENDING_KEY, None)
                session[PENDING_KEY] = {"user_id": result.user.id, "at": int(time.time()), "next": target}
                return redirect(url_for("auth.login_code"))
            return complete_login(result.user, target)
        if result.retry_after is not None:
            retry_after = result.retry_after
            form.form_errors.append(throttled_message(retry_after))
            status = 429
        else:
            form.form_errors.append("That e-mail and password do not match an active account.")
            status = 401
    elif form.errors:
        status = 422
    return with_retry_after(make_response(render_template("auth/login.html", form=form), status), retry_after)


def complete_login(user: User, target: str, recovery_code: bool = False):
    session.clear()  # a new session, and with it a new CSRF token
    login_user(user)
    # Names this login on the server (and its sockets, for logout).
    session[SESSION_KEY] = sessions.start(user, request.remote_addr, request.user_agent.string)
    if recovery_code:
        left = two_factor.recovery_code_used(request_actor(), user)
        flash(f"You signed in with a recovery code; {left} left. Make new ones on the two-factor page if you "
              "are running out.", "error" if left < 3 else "message")
    db.session.commit()
    login_succeeded(user.email, request.remote_addr or "-")
    return redirect(target)


def throttled_message(retry_after: int) -> str:
    return f"Too many failed logins. Try again in {wait_text(retry_after)}."


def with_retry_after(response, retry_after: int | None):
    if retry_after:
        response.headers["Retry-After"] = str(retry_after)
    return response


def pending_user() -> User | None:
    """The user who gave the right password for this session a moment ago and still owes a code."""
    pending = session.get(PENDING_KEY)
    if not isinstance(pending, dict) or not isinstance(pending.get("user_id"), int):
        return None
    if not 0 <= time.time() - pending.get("at", 0) <= PENDING_SECONDS:
        return None
    user = db.session.get(User, pending["user_id"])
    return user if user is not None and user.active and two_factor.enabled(user) else None


@blueprint.route("/login/code", methods=["GET", "POST"])
def login_code():
    if current_user.is_authenticated:
        return redirect(home_for(current_user))
    user = pending_user()
    if user is None:
        if session.pop(PENDING_KEY, None) is not None:
            flash("That took too long: log in again.", "error")
        return redirect(url_for("auth.login"))
    form = LoginCodeForm()
    status, retry_after = 200, None
    if form.validate_on_submit():
        ip = request.remote_addr or "-"
        retry_after = throttled(user.email, ip)
        if not retry_after:
            kind = two_factor.use_login_code(user, form.code.data)
            if kind is not None:
                target = safe_next(session[PENDING_KEY].get("next")) or home_for(user)
                return complete_login(user, target, recovery_code=kind == "recovery")
            db.session.rollback()
            count_failure(user.email, ip)  # the same throttle as passwords
            form.code.errors.append("That code is not right, or was used already. Enter the code the app shows "
                                    "now, or an unused recovery code.")
            status = 401
        else:
            form.form_errors.append(throttled_message(retry_after))
            status = 429
    return with_retry_after(make_response(render_template("auth/login_code.html", form=form), status), retry_after)


@blueprint.route("/")
def index():
    if current_user.is_authenticated:
        if current_user.role == Role.TENANT_ADMIN:
            return redirect(url_for("dashboard.dashboard"))
        return redirect(home_for(current_user))
    return redirect(url_for("auth.login"))


@blueprint.route("/logout", methods=["POST"])
def logout():
    token = session.pop(SESSION_KEY, None)
    login_session_id = sessions.end(token) if token else None
    if login_session_id is not None:
        db.session.commit()
        live.disconnect_session(login_session_id)  # this session's sockets, on every web process
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))


# Two factors: enrolment, recovery codes, turning them off; and the rule that sends a user whose role requires
# them to enrolment first.

@blueprint.record_once
def check_roles_setting(state) -> None:
    unknown = set(state.app.config["PORTAL_REQUIRE_2FA_FOR"]) - {role.value for role in Role}
    if unknown:
        raise ConfigError(f"PORTAL_REQUIRE_2FA_FOR names no such role: {', '.join(sorted(unknown))} "
                          f"(roles: {', '.join(role.value for role in Role)})")


@blueprint.before_app_request
def enrol_first():
    """A signed-in user whose role requires two factors and who has none sees only the enrolment page."""
    if request.endpoint is None or request.endpoint in ENROLMENT_OPEN or not current_user.is_authenticated:
        return None
    if not two_factor.required_for(current_user) or two_factor.enabled(current_user):
        return None
    if request.accept_mimetypes.best == "application/json":
        return jsonify(error={"code": 403, "message": ENROL_FIRST}), 403
    if request.headers.get("HX-Request") == "true":
        response = make_response(render_template("errors/error.html", status=403, title="Two factors needed",
                                                 message=ENROL_FIRST), 403)
        response.headers["HX-Retarget"] = "body"
        response.headers["HX-Reswap"] = "innerHTML"
        return response
    return redirect(url_for("auth.two_factor"))


def two_factor_page(status: int = 200, confirm_form=None, codes_form=None, disable_form=None):
    user = current_user
    context = {"enabled": two_factor.enabled(user), "required": two_factor.required_for(user),
               "enrol_first": ENROL_FIRST, "confirm_form": confirm_form or ConfirmCodeForm(),
               "codes_form": codes_form or CurrentPasswordForm(), "disable_form": disable_form or CurrentPasswordForm()}
    if context["enabled"]:
        context["codes_left"] = two_factor.recovery_codes_left(user)
    else:
        secret = two_factor.pending_secret(user)
        db.session.commit()  # the same pending secret until a code confirms it
        context["secret"] = secret
        context["qr"] = two_factor.qr_svg(two_factor.provisioning_uri(user, secret))
    return make_response(render_template("auth/two_factor.html", **context), status)


def recovery_codes_page(codes: list[str]):
    response = make_response(render_template("auth/recovery_codes.html", codes=codes))
    response.headers["Cache-Control"] = "no-store"  # shown once: not kept by the browser either
    return response


def password_confirmed(form) -> bool:
    """The user's password again, for changes to their second factor; failures count against the login throttle."""
    result = authenticate(current_user.email, form.password.data, request.remote_addr or "-")
    if result.user is not None and result.user.id == current_user.id:
        return True
    if result.retry_after is not None:
        form.password.errors.append(f"Too many failed attempts. Try again in {wait_text(result.retry_after)}.")
    else:
        form.password.errors.append("That is not your password.")
    return False


@blueprint.route("/account/two-factor", endpoint="two_factor")
@not_while_impersonating
def two_factor_account():
    response = two_factor_page()
    response.headers["Cache-Control"] = "no-store"  # the secret, while enrolling
    return response


@blueprint.route("/account/two-factor/confirm", methods=["POST"])
@not_while_impersonating
def two_factor_confirm():
    form = ConfirmCodeForm()
    if form.validate_on_submit():
        codes = save_form(form, lambda: two_factor.confirm(request_actor(), current_user, form.code.data), near="code")
        if codes is not None:
            flash("Two factors are on: from now on you sign in with a code from your app.")
            return recovery_codes_page(codes)
    return two_factor_page(422, confirm_form=form)


@blueprint.route("/account/two-factor/recovery-codes", methods=["POST"])
@not_while_impersonating
def two_factor_recovery_codes():
    form = CurrentPasswordForm()
    if form.validate_on_submit() and password_confirmed(form):
        codes = save_form(form, lambda: two_factor.regenerate_recovery_codes(request_actor(), current_user),
                          near="password")
        if codes is not None:
            flash("New recovery codes: the old ones no longer work.")
            return recovery_codes_page(codes)
    return two_factor_page(422, codes_form=form)


@blueprint.route("/account/two-factor/disable", methods=["POST"])
@not_while_impersonating
def two_factor_disable():
    form = CurrentPasswordForm()
    disabled = form.validate_on_submit() and password_confirmed(form) and save_form(
        form, lambda: two_factor.disable(request_actor(), current_user) or True, near="password")
    if disabled:
        flash("Two factors are off: you sign in with your password alone.")
        return redirect(url_for("auth.two_factor"), 303)
    return two_factor_page(422, disable_form=form)
