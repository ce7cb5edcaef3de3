"""The form tenant admins make API tokens with."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from portal.api.tokens import TOKEN_NAME_RULE
from portal.forms import strip

EXPIRY_CHOICES = [SelectChoice(value, label) for value, label in (
    ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year"), ("never", "No expiry"))]


class TokenForm(FlaskForm):
    name = StringField("Name", filters=[strip], validators=[DataRequired(), Length(max=64)],
                       description=f"What uses it, e.g. \"billing system\": {TOKEN_NAME_RULE}. The audit log names "
                                   "it as the actor of every change it makes.")
    scope = SelectField("Scope", default="read", choices=[SelectChoice("read", "Read"), SelectChoice("write", "Write")],
                        description="Read: list and look at routers, configurations and clients, and download their "
                                    "files (they contain private keys). Write: also add, change, revoke and rotate.")
    expires_in_days = SelectField("Expires after", default="90", choices=EXPIRY_CHOICES)

    def expiry_days(self) -> int | None:
        return None if self.expires_in_days.data == "never" else int(self.expires_in_days.data)
