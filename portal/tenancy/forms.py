from flask_wtf import FlaskForm
from wtforms import EmailField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from portal.forms import strip
from portal.tenancy.models import Role

TENANT_HINT = "Tenant admins only; platform staff belong to no tenant."


class TenantForm(FlaskForm):
    name = StringField("Tenant name", validators=[DataRequired(), Length(max=80)])


class TenantRemoveForm(FlaskForm):
    confirm_name = StringField("Type the tenant's name to confirm", filters=[strip], validators=[DataRequired()])


class TenantInviteForm(FlaskForm):
    """A tenant admin invites another admin of their own tenant."""

    email = EmailField("E-mail", filters=[strip], validators=[DataRequired(), Length(max=254)],
                       description="They get a link to choose their password.")


class InviteForm(TenantInviteForm):
    """A platform admin invites anyone: staff, or a tenant's admin."""

    role = SelectField("Role", choices=[SelectChoice(role.value, role.label) for role in Role],
                       default=Role.TENANT_ADMIN)
    tenant_id = SelectField("Tenant", coerce=int, choices=[], validate_choice=False, description=TENANT_HINT)


class RoleForm(FlaskForm):
    role = SelectField("Role", choices=[SelectChoice(role.value, role.label) for role in Role])
    tenant_id = SelectField("Tenant", coerce=int, choices=[], validate_choice=False, description=TENANT_HINT)
