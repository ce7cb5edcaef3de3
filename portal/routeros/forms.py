from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, NumberRange

from portal.forms import strip
from portal.routeros.service import ADDRESS_RULE, PASSWORD_MAX, AccessSettings


class RouterApiForm(FlaskForm):
    """A router's API access. The password field never shows the stored password (a placeholder says there is
    one); left empty, the stored one is kept."""

    address = StringField("Address", description=ADDRESS_RULE, filters=[strip],
                          validators=[DataRequired(message="Give the address the portal connects to."),
                                      Length(max=255)])
    port = IntegerField("Port", default=8729, description="8729 for the api-ssl service (TLS), 8728 without TLS.",
                        validators=[NumberRange(1, 65535, message="Ports are 1 to 65535.")])
    tls = BooleanField("Use TLS", default=True, description="Recommended. The router's certificate is pinned the "
                       "first time the portal logs in; a different one later is refused.")
    username = StringField("RouterOS user", filters=[strip],
                           validators=[DataRequired(message="Give the RouterOS user the portal logs in as."),
                                       Length(max=64)])
    password = PasswordField("Password", description="Stored encrypted and never shown again.",
                             validators=[Length(max=PASSWORD_MAX)])
    forget_certificate = BooleanField("Forget the pinned certificate",
                                      description="Only after replacing the router's certificate on purpose.")

    @classmethod
    def for_router(cls, router, method: str) -> RouterApiForm:
        form = cls() if method == "POST" else cls(data={
            "address": router.api_address or "", "port": router.api_port or 8729,
            "tls": router.api_tls if router.api_address else True, "username": router.api_username or ""})
        if router.api_password is not None:
            form.password.render_kw = {"placeholder": "stored (leave empty to keep it)", "autocomplete": "new-password"}
            form.password.description = "Stored encrypted and never shown. Leave empty to keep the stored one."
        else:
            form.password.render_kw = {"autocomplete": "new-password"}
        return form

    def settings(self) -> AccessSettings:
        return AccessSettings(address=self.address.data or "", port=self.port.data or 0, tls=bool(self.tls.data),
                              username=self.username.data or "", password=self.password.data or "",
                              forget_certificate=bool(self.forget_certificate.data))
