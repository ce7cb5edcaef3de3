from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Regexp

from portal.forms import SshForm, strip
from portal.openvpn.models import (
    CLIENT_NAME,
    CLIENT_NAME_RULE,
    DEFAULT_BASE_DIR,
    DEFAULT_MANAGEMENT_PORT,
    DEFAULT_NETMASK,
    DEFAULT_NETWORK,
)


class ClientForm(FlaskForm):
    name = StringField("Name", description=CLIENT_NAME_RULE.capitalize() + ". It names the client and its "
                       ".ovpn file, and cannot be reused, not even after revocation.",
                       filters=[strip],
                       validators=[DataRequired(message="Give the client a name."),
                                   Regexp(f"^{CLIENT_NAME.pattern}$", message=f"Use {CLIENT_NAME_RULE}.")])


class ServerForm(SshForm):
    name = StringField("Name", filters=[strip], validators=[DataRequired(), Length(max=64)])
    remote_host = StringField("Public host", description="The name or address clients connect to.",
                              filters=[strip], validators=[DataRequired(), Length(max=253)])
    remote_port = IntegerField("Public port", default=1194, validators=[NumberRange(1, 65535)])
    protocol = SelectField("Protocol", choices=[SelectChoice("udp", "UDP"), SelectChoice("tcp", "TCP")], default="udp")
    base_dir = StringField("Base directory", default=DEFAULT_BASE_DIR, filters=[strip],
                           description="Where the PKI, the server configuration and the client script live.",
                           validators=[DataRequired(), Length(max=200)])
    network = StringField("Tunnel network", default=DEFAULT_NETWORK, filters=[strip], validators=[DataRequired()])
    netmask = StringField("Tunnel netmask", default=DEFAULT_NETMASK, filters=[strip], validators=[DataRequired()])
    management_port = IntegerField("Management port", default=DEFAULT_MANAGEMENT_PORT,
                                   description="OpenVPN's management interface, on 127.0.0.1 of the server.",
                                   validators=[NumberRange(1, 65535)])
    driver = SelectField("Managed", choices=[SelectChoice("ssh", "over SSH"),
                                                SelectChoice("local", "on this machine")], default="ssh")
    accepts_new_clients = BooleanField("Place new clients here", default=True,
                                       description="Turn off to drain a server: its clients stay, new ones go "
                                       "elsewhere.")
