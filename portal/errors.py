"""Errors the domain raises on purpose; their message is fit to show a user."""


class DomainError(Exception):
    """Bad input or a state that forbids the action. Changes nothing; the message says why."""

    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


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


def show_on_form(form, error: DomainError) -> None:
    """Put a domain error on a WTForms form: beside its field when it names one, else above the form."""
    field = getattr(form, error.field, None) if isinstance(error, FieldError) else None
    if field is not None:
        field.errors.append(str(error))
    else:
        form.form_errors.append(str(error))
