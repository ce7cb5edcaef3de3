"""Login and logout."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, flash, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from portal import live
from portal.actions import first_read
from portal.auth import sessions
from portal.auth.forms import LoginForm
from portal.auth.service import authenticate
from portal.extensions import db, login_manager
from portal.htmx import wants_fragment
from portal.live.server import SESSION_KEY
from portal.tenancy.models import Role, User

blueprint = Blueprint("auth", __name__)


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    """The user only while the cookie's session is live on the server (logout or deactivation end it)."""
    return first_read(lambda: sessions.user_for(session.get(SESSION_KEY), int(user_id)))


@login_manager.unauthorized_handler
def unauthorized():
    login_url = url_for("auth.login", next=request.full_path if request.method == "GET" else None)
    if wants_fragment():
        response = make_response("", 401)
        response.headers["HX-Redirect"] = login_url  # a login page must not be swapped into a fragment
        return response
    return redirect(login_url)


def home_for(user: User) -> str:
    return url_for("tenancy.tenants") if user.role == Role.PLATFORM_ADMIN else url_for("wireguard.routers")


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
    status = 200
    if form.validate_on_submit():
        result = authenticate(form.email.data, form.password.data, request.remote_addr or "-")
        if result.user is not None:
            target = safe_next(request.args.get("next")) or home_for(result.user)
            session.clear()  # a new session, and with it a new CSRF token
            login_user(result.user)
            # Names this login on the server (and its sockets, for logout).
            session[SESSION_KEY] = sessions.start(result.user, request.remote_addr)
            db.session.commit()
            return redirect(target)
        if result.retry_after is not None:
            minutes = max(1, round(result.retry_after / 60))
            form.form_errors.append(f"Too many failed logins. Try again in about {minutes} minute(s).")
            status = 429
        else:
            form.form_errors.append("That e-mail and password do not match an active account.")
            status = 401
    return render_template("auth/login.html", form=form), status


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
    if token:
        sessions.end(token)
        db.session.commit()
        live.disconnect_session(token)  # this session's sockets, on every web process
    logout_user()
    session.clear()
    flash("You are logged out.")
    return redirect(url_for("auth.login"))
