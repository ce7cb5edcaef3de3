"""Forms of the WireGuard pages: routers (tenants) and hubs (platform admins)."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, ValidationError

from portal.errors import FieldError
from portal.forms import SshForm, strip
from portal.wireguard.service import NOTE_MAX, ROUTER_NAME_RULE, validate_router_name


class RouterName:
    """The service's rule, so the form says exactly what the service would (and keeps the composed name)."""

    field_flags = {"required": True}

    def __call__(self, form: FlaskForm, field: StringField) -> None:
        try:
            field.data = validate_router_name(field.data or "")
        except FieldError as error:
            raise ValidationError(str(error)) from None


class RouterForm(FlaskForm):
    """A router's name and note: adding one, and editing one."""

    name = StringField("Name", description=ROUTER_NAME_RULE[0].upper() + ROUTER_NAME_RULE[1:] + ".",
                       filters=[strip], validators=[RouterName()])
    note = TextAreaField("Note", description="Optional: where it is, who to call.",
                         validators=[Length(max=NOTE_MAX)])


class HubForm(SshForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=64)])
    endpoint_host = StringField("Endpoint host", description="The public name or address routers connect to.",
                                validators=[DataRequired(), Length(max=253)])
    endpoint_port = IntegerField("Endpoint port", default=51820, validators=[NumberRange(1, 65535)])
    interface = StringField("Interface", default="wg0", validators=[DataRequired(), Length(max=15)])
    driver = SelectField("Managed by", choices=[SelectChoice("ssh", "the portal, over SSH"),
                                                SelectChoice("local", "the portal, on this machine"),
                                                SelectChoice("none", "nobody (peers added by hand)")], default="ssh")
    accepts_new_tenants = BooleanField("Place new tenants here", default=True,
                                       description="Turn off to drain a hub: its tenants stay, new ones go elsewhere.")
    public_key = StringField("WireGuard public key",
                             description="Hubs managed by nobody only: what `wg show IF public-key` prints on the "
                                         "hub. Managed hubs make their own key.")
