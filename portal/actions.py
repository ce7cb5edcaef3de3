"""How views commit what a user asked for: one unit of work, and a DomainError shown to the user, not raised.

A DomainError rolls the whole request back, so nothing is half-done and no job is enqueued for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import flash

from portal.errors import DomainError, show_on_form
from portal.extensions import db

T = TypeVar("T")


def act(change: Callable[[], T], then: Callable[[T], object], done: str) -> None:
    """Commit `change()`, then run `then` on its result (enqueue the job) and flash `done`; or flash the error."""
    try:
        result = change()
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        flash(str(error), "error")
        return
    then(result)
    flash(done)


def save_form(form, change: Callable[[], T]) -> T | None:
    """Commit `change()` and return its result; or show the error on the form (beside its field) and return None."""
    try:
        result = change()
        db.session.commit()
    except DomainError as error:
        db.session.rollback()
        show_on_form(form, error)
        return None
    return result
