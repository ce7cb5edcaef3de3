"""How views commit what a user asked for: one unit of work, and a DomainError shown to the user, not raised.

A DomainError rolls the whole request back, so nothing is half-done and no job is woken for it. After the
commit, `then` wakes the job that does the work; if the queue does not answer, the change still stands (the
database is the queue of record and workers sweep for it), and the page says so instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click
from flask import flash
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from portal.errors import DomainError, show_on_form
from portal.extensions import db

T = TypeVar("T")
QUEUED_LATE = "The job queue did not answer just now; a worker picks the change up within seconds of its return."


def commit(change: Callable[[], T]) -> T:
    """Run `change()` and commit it, once more if the first try met either of two things a retry resolves:
    a unique index that refused the commit (a concurrent twin, the same name or the same router's
    configuration, committed a moment before: the retry's own checks see it and raise the DomainError that
    says why), or a database connection that died under it (the database restarted or ended it)."""
    try:
        result = change()
        db.session.commit()
    except DBAPIError as error:
        if not (isinstance(error, IntegrityError) or error.connection_invalidated):
            raise
        db.session.rollback()
        result = change()
        db.session.commit()
    return result


def first_read(read: Callable[[], T]) -> T:
    """Run `read`, the first statement of a request's transaction, once more on a new connection if the
    database ended the connection under it (a pool's ping can pass a moment before a termination lands)."""
    try:
        return read()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        db.session.rollback()
        return read()


def act(change: Callable[[], T], then: Callable[[T], object], done: str | Callable[[T], str]) -> bool:
    """Commit `change()`, run `then` on its result (wake the job) and flash `done` (or `done(result)`); or flash
    the error."""
    try:
        result = commit(change)
    except DomainError as error:
        db.session.rollback()
        flash(str(error), "error")
        return False
    message = done(result) if callable(done) else done
    flash(message if then(result) is not False else f"{message} {QUEUED_LATE}")
    return True


def save_form(form, change: Callable[[], T], then: Callable[[T], object] | None = None,
              near: str | None = None) -> T | None:
    """Commit `change()`, run `then` on its result and return it; or show the error on the form (beside its
    field, or beside `near`) and return None."""
    try:
        result = commit(change)
    except DomainError as error:
        db.session.rollback()
        show_on_form(form, error, near)
        return None
    if then is not None and then(result) is False:
        flash(QUEUED_LATE)
    return result


def commit_or_exit(change: Callable[[], T]) -> T:
    """`commit` for `flask` commands: a DomainError ends the command with its message."""
    try:
        return commit(change)
    except DomainError as error:
        db.session.rollback()
        raise click.ClickException(str(error)) from error


def named_or_exit(model: type, name: str, what: str):
    """The row of `model` named `name`, for `flask` commands; or end the command saying there is none."""
    row = db.session.scalar(select(model).where(model.name == name))
    if row is None:
        raise click.ClickException(f"No {what} named {name!r}.")
    return row
