"""One's own account (/account: password, sign-in sessions; two factors are `portal.auth`'s), and the pages of
the one-time links sent by e-mail (/invite/<token>, /password-reset/<token>), which need no sign-in.

Ending a session closes its open pages' live connections after the commit (`live.session_ended`), and the
session is refused on its next request or socket event anyway.
"""

from __future__ import annotations

import re

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, session, url_for
from flask_login import current_user

from portal.account import service
from portal.account.forms import ChangePasswordForm, SetPasswordForm
from portal.actions import act, commit, save_form
from portal.auth import sessions
from portal.auth.models import TokenPurpose
from portal.errors import DomainError, show_on_form
from portal.extensions import db
from portal.forms import ActionForm
from portal.live.server import SESSION_KEY
from portal.tenancy.access import not_while_impersonating, request_actor
from portal.types import utcnow

blueprint = Blueprint("account", __name__)

TWO_FACTOR_PATH = "/account/two-factor"


@blueprint.route("/account")
@not_while_impersonating
def index():
    two_factor = any(rule.rule == TWO_FACTOR_PATH for rule in current_app.url_map.iter_rules())
    return render_template("account/index.html", two_factor_url=TWO_FACTOR_PATH if two_factor else None)


@blueprint.route("/account/password", methods=["GET", "POST"])
@not_while_impersonating
def password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user, keep = current_user._get_current_object(), _current_login_session_id()
        ended = save_form(form, lambda: service.change_password(
            request_actor(), user, form.current_password.data, form.new_password.data, keep,
            request.remote_addr or "-"))
        if ended is not None:
            others = f"your {ended} other session(s) were signed out" if ended else "you had no other sessions"
            flash(f"Your password is changed; {others}. This one stays signed in.")
            return redirect(url_for("account.password"), 303)
    status = 422 if form.errors else 200
    return render_template("account/password.html", form=form), status


@blueprint.route("/account/sessions")
@not_while_impersonating
def sessions_page():
    return render_template("account/sessions.html", sessions=service.my_sessions(current_user),
                           current_id=_current_login_session_id(), describe=describe_user_agent, now=utcnow(),
                           form=ActionForm())


@blueprint.route("/account/sessions/<int:login_session_id>/end", methods=["POST"])
@not_while_impersonating
def end_session(login_session_id: int):
    if ActionForm().validate_on_submit():
        user, current = current_user._get_current_object(), _current_login_session_id()
        act(lambda: service.end_my_session(request_actor(), user, login_session_id, current), lambda _: None,
            "That session is signed out.")
    return redirect(url_for("account.sessions_page"), 303)


@blueprint.route("/account/sessions/end-others", methods=["POST"])
@not_while_impersonating
def end_other_sessions():
    if ActionForm().validate_on_submit():
        user, current = current_user._get_current_object(), _current_login_session_id()
        act(lambda: service.end_my_other_sessions(request_actor(), user, current), lambda _: None,
            "Every other session is signed out.")
    return redirect(url_for("account.sessions_page"), 303)


def _current_login_session_id() -> int | None:
    found = g.get("login_session_id")
    return found if found is not None else sessions.session_id_for(session.get(SESSION_KEY))


# One-time links

@blueprint.route("/invite/<token>", methods=["GET", "POST"])
def invitation(token: str):
    return _use_link(token, TokenPurpose.INVITE)


@blueprint.route("/password-reset/<token>", methods=["GET", "POST"])
def password_reset(token: str):
    return _use_link(token, TokenPurpose.PASSWORD_RESET)


def _use_link(token: str, purpose: TokenPurpose):
    link = service.find_link(token, purpose)
    if link.state is service.LinkState.UNKNOWN:
        return _no_store(render_template("account/link_gone.html", title="Unknown link",
                                         message="This link is not valid. Check that you copied all of it, or ask "
                                                 "your administrator for a new one."), 404)
    if link.state is not service.LinkState.VALID:
        return _gone(service.GONE_MESSAGES[link.state])
    form = SetPasswordForm()
    if form.validate_on_submit():
        try:
            commit(lambda: service.use_link(token, purpose, form.password.data, g.get("request_id"),
                                            request.remote_addr))
        except service.LinkGone as error:  # used a moment ago (another tab, another person): a page, not a field
            db.session.rollback()
            return _gone(str(error))
        except DomainError as error:
            db.session.rollback()
            show_on_form(form, error, near="password")
        else:
            flash("Your password is set. Sign in with your e-mail address and your new password.")
            return redirect(url_for("auth.login"), 303)
    status = 422 if form.errors else 200
    return _no_store(render_template("account/set_password.html", form=form, purpose=purpose.value,
                                     email=link.user.email), status)


def _gone(message: str):
    return _no_store(render_template("account/link_gone.html", title="This link no longer works", message=message),
                     410)


def _no_store(body: str, status: int = 200):
    """Pages behind a one-time link are never cached (a shared computer's back button)."""
    response = current_app.make_response((body, status))
    response.headers["Cache-Control"] = "no-store"
    return response


BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"),
            ("Chromium/", "Chromium"), ("Safari/", "Safari"), ("curl/", "curl"), ("python-requests", "Python"),
            ("Werkzeug/", "test client"))
SYSTEMS = (("Android", "Android"), ("iPhone", "iOS"), ("iPad", "iPadOS"), ("Windows", "Windows"),
           ("Mac OS X", "macOS"), ("CrOS", "ChromeOS"), ("Linux", "Linux"))


def describe_user_agent(user_agent: str | None) -> str:
    """A person's words for a User-Agent: "Firefox on Linux"; "unknown browser" when there is none."""
    if not user_agent:
        return "unknown browser"
    browser = next((name for mark, name in BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in SYSTEMS if mark in user_agent), None)
    if browser is None:
        browser = re.split(r"[/\s]", user_agent, maxsplit=1)[0][:40] or "unknown browser"
    return f"{browser} on {system}" if system else browser
