"""Errors the domain raises on purpose; their message is fit to show a user."""


class DomainError(Exception):
    """Bad input or a state that forbids the action. Changes nothing; the message says why."""

    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The row is not in a state that allows the action (for example revoking a revoked configuration)."""

    code = "conflict"
