"""Errors raised on purpose: domain errors (their message is fit to show a user) and transient errors (worth
trying again later)."""


class DomainError(Exception):
    """Bad input or a state that forbids the action. Changes nothing; the message says why."""

    code = "invalid"


class Conflict(DomainError):
    """The row is not in a state that allows the action (for example revoking a revoked configuration)."""

    code = "conflict"


class FieldError(DomainError):
    """A bad value in one field of a form's settings; `field` names it, so the page shows the error beside it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def checked_field(check, value, field: str):
    """`check(value)`, its ValueError raised as a FieldError on `field`."""
    try:
        return check(value)
    except ValueError as error:
        raise FieldError(field, str(error).capitalize().rstrip(".") + ".") from None


def show_on_form(form, error: DomainError, near: str | None = None) -> None:
    """Put a domain error on a WTForms form: beside its field when it names one (else beside `near`), else above
    the form."""
    field = getattr(form, error.field if isinstance(error, FieldError) else near or "", None)
    if field is not None:
        field.errors.append(str(error))
    else:
        form.form_errors.append(str(error))


class TransientError(Exception):
    """Worth retrying later: a host unreachable for now. Jobs leave the row waiting and try again after a delay."""


ERROR_MAX = 500


def describe(error: Exception) -> str:
    """An error as one bounded line for a row's `last_error` and the audit log."""
    text = str(error) or type(error).__name__
    return text[:ERROR_MAX]

