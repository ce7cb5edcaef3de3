from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from portal.tenancy.models import Role


class TenantForm(FlaskForm):
    name = StringField("Tenant name", validators=[DataRequired(), Length(max=80)])


class UserForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Initial password", validators=[DataRequired(), Length(min=10, max=1024)])
    role = SelectField("Role", choices=[SelectChoice(role.value, role.label) for role in Role],
                       default=Role.TENANT_ADMIN)
    tenant_id = SelectField("Tenant", coerce=int, choices=[], validate_choice=False,
                            description="Tenant admins only; platform staff belong to no tenant.")
