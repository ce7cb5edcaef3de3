from flask_wtf import FlaskForm
from wtforms import PasswordField
from wtforms.validators import DataRequired, EqualTo, Length

NEW_PASSWORD_HINT = "A long passphrase you use nowhere else; short and common passwords are refused."


def _new_password(label: str) -> PasswordField:
    return PasswordField(label, validators=[DataRequired(), Length(max=1024)],
                         description=NEW_PASSWORD_HINT,
                         render_kw={"autocomplete": "new-password"})


def _repeat(field: str) -> PasswordField:
    return PasswordField("Repeat it", validators=[DataRequired(), EqualTo(field, "The two passwords differ.")],
                         render_kw={"autocomplete": "new-password"})


class SetPasswordForm(FlaskForm):
    """Choosing a password through a one-time link (invitation, reset)."""

    password = _new_password("New password")
    confirm = _repeat("password")


class ChangePasswordForm(FlaskForm):
    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)],
                                     render_kw={"autocomplete": "current-password"})
    new_password = _new_password("New password")
    confirm = _repeat("new_password")
