"""Form pieces more than one area uses."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import IntegerField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange


def strip(value: str | None) -> str | None:
    return value.strip() if value else value


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
