"""Small pieces of HTML that list pages repeat in every row (a status, a moment, an age, online or offline),
as Python functions the templates call like macros: a Jinja macro call costs several times a function's, and a
list page makes hundreds of them. Every value is escaped as `{{ value }}` would escape it."""

from __future__ import annotations

from datetime import datetime

from markupsafe import Markup, escape


def status(value) -> Markup:
    shown = escape(value)
    return Markup(f'<span class="status status-{shown}">{shown}</span>')


def when(moment: datetime | None) -> Markup:
    if not moment:
        return Markup("-")
    iso = moment.isoformat()  # digits and "-:.T+" only: nothing to escape; cheaper than strftime
    return Markup(f'<time datetime="{iso}" class="nowrap">{iso[:10]} {iso[11:19]} UTC</time>')


def ago(moment: datetime, now: datetime, parens: bool = True) -> Markup:
    """"N s ago", counted on by static/app.js from data-age (seconds when rendered); no request, no timer on the
    server."""
    seconds = max(int((now - moment).total_seconds()), 0)
    text = f"({seconds} s ago)" if parens else f"{seconds} s ago"
    return Markup(f'<span class="ago" data-age="{seconds}">{text}</span>')


def connection(configuration, now: datetime) -> Markup:
    """Online (a handshake within 3 minutes) or offline, as a dot and a word."""
    state = "online" if configuration.online(now) else "offline"
    return Markup(f'<span class="status status-{state}"><span class="dot" aria-hidden="true"></span> {state}</span>')


def details(values: dict | None) -> Markup:
    """An audit event's details as "key: value; ...", by key (case aside), each value in monospace."""
    ordered = sorted((values or {}).items(), key=lambda item: item[0].lower())
    return Markup("; ".join(f'{escape(key)}: <span class="mono">{escape(value)}</span>' for key, value in ordered))


GLOBALS = {"status": status, "when": when, "ago": ago, "connection": connection, "details": details}
