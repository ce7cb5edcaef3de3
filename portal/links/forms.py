from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, RadioField, SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length

from portal.forms import strip
from portal.links.models import FILES


class EmailLinkForm(FlaskForm):
    """Send an OpenVPN client's profile by e-mail (the expiry's upper bound is the service's, with its message)."""

    recipient = EmailField("E-mail address", filters=[strip], validators=[DataRequired(), Length(max=254)],
                           description="They get a link that downloads the file once.")
    hours = IntegerField("Link works for (hours)", validators=[InputRequired("Enter a number of hours.")],
                         render_kw={"min": 1, "inputmode": "numeric"})


class WireGuardEmailLinkForm(EmailLinkForm):
    """Send a router's RouterOS script or wg-quick config by e-mail."""

    file_format = RadioField("File", choices=[SelectChoice(kind, FILES[kind]) for kind in ("rsc", "conf")],
                             default="rsc", validators=[InputRequired("Choose a file.")])
