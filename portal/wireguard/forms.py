from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Regexp

from portal.wireguard.service import NOTE_MAX, ROUTER_NAME, ROUTER_NAME_RULE


class RouterForm(FlaskForm):
    name = StringField("Name", description=ROUTER_NAME_RULE.capitalize() + ".",
                       filters=[lambda value: value.strip() if value else value],
                       validators=[DataRequired(message="Give the router a name."),
                                   Regexp(f"^{ROUTER_NAME.pattern}$", message=f"Use {ROUTER_NAME_RULE}.")])
    note = TextAreaField("Note", description="Optional: where it is, who to call.",
                         validators=[Length(max=NOTE_MAX)])


class ActionForm(FlaskForm):
    """A button that changes something: only its CSRF token."""
