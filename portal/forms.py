"""Form pieces more than one area uses."""

from __future__ import annotations

from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import IntegerField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange
from wtforms.widgets import Select


def strip(value: str | None) -> str | None:
    return value.strip() if value else value


class QuickSelect(Select):
    """WTForms' select, each plain option written in one string (the same HTML): a filter with dozens of options
    renders in a fifth of the time `html_params` takes per option."""

    @classmethod
    def render_option(cls, choice, **kwargs):
        if choice.render_kw or kwargs:
            return super().render_option(choice, **kwargs)
        value = str(choice.value) if isinstance(choice.value, bool) else choice.value
        selected = " selected" if choice.selected else ""
        return Markup(f'<option{selected} value="{escape(value)}">{escape(choice.label or choice.value)}</option>')


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class SshForm(FlaskForm):
    """How the portal reaches a managed host (a hub, an OpenVPN server); `templates/_macros.html: ssh_fields`."""

    ssh_host = StringField("SSH host", filters=[strip], validators=[Length(max=253)])
    ssh_port = IntegerField("SSH port", default=22, validators=[NumberRange(1, 65535)])
    ssh_user = StringField("SSH user", default="root", filters=[strip], validators=[DataRequired(), Length(max=32)])
    ssh_host_key = StringField("Pinned host key", description='The host\'s key, as in known_hosts: "ssh-ed25519 '
                               'AAAA…" (ssh-keyscan, checked out of band).')
    ssh_private_key = TextAreaField("SSH private key",
                                    description="Stored encrypted; leave empty to keep the stored one.")

    @classmethod
    def for_host(cls, host, method: str):
        """The form filled from a stored host; its private key is never sent back to the browser."""
        form = cls(obj=host)
        if host is not None and method == "GET":
            form.ssh_private_key.data = ""
        return form

    def settings(self, settings_class):
        """The submitted fields as the service's settings dataclass."""
        return settings_class(**{name: value for name, value in self.data.items() if name != "csrf_token"})
