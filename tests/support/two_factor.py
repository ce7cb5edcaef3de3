"""Second-factor codes for tests: `fresh_code(app, email)` is a TOTP code the portal has not accepted yet (see
`tests.conftest.totp_code`), for the sign-in code step and for actions that ask for a fresh code."""

from tests.conftest import enrol_two_factor, totp_code

fresh_code = totp_code

__all__ = ["enrol_two_factor", "fresh_code"]
