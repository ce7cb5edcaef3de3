from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, Regexp


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[
        DataRequired(), Length(max=254),
        Regexp(r"^[^\x00-\x1f\x7f]*$", message="No address holds control characters.")])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class LoginCodeForm(FlaskForm):
    code = StringField("Code", validators=[DataRequired(), Length(max=64)],
                       render_kw={"autocomplete": "one-time-code", "spellcheck": "false", "autocapitalize": "none"},
                       description="The 6 digits your authenticator app shows now, or one of your recovery codes.")


class ConfirmCodeForm(FlaskForm):
    code = StringField("Code from the app", validators=[DataRequired(), Length(max=16)],
                       render_kw={"autocomplete": "one-time-code", "inputmode": "numeric"})


class CurrentPasswordForm(FlaskForm):
    password = PasswordField("Your current password", validators=[DataRequired(), Length(max=1024)],
                             render_kw={"autocomplete": "current-password"})
