"""`Idempotency-Key` on POST: the first answer is kept per (token, key) for a day and replayed for repeats.

The key's row is inserted at the start of the transaction that makes the change, and filled with the answer before
it commits. A concurrent repeat's insert meets the unique constraint: on PostgreSQL it waits for the first
transaction and then fails, on SQLite it never starts before the first commits (BEGIN IMMEDIATE); either way it
then finds the stored answer and replays it, so twenty parallel repeats make one resource. An answer the
operation gave (a success, or a 404, 409 or 422 of its own) is kept; one given before it ran (401, 403, 422 for
a malformed body, 429) is not, so a repeat after it gets another chance.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flask import Response, request
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from werkzeug.exceptions import HTTPException

from portal.api.errors import ApiError, response_for
from portal.api.models import IdempotentRequest
from portal.api.replies import Reply
from portal.errors import DomainError
from portal.extensions import db
from portal.types import utcnow

HEADER = "Idempotency-Key"
KEEP = timedelta(hours=24)
KEY_SHAPE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces: UUIDs, ULIDs, anything of a client's
ATTEMPTS = 4


def key_of_request() -> str | None:
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not KEY_SHAPE.fullmatch(raw):
        raise ApiError("invalid_idempotency_key", f"{HEADER} must be 1 to 255 printable ASCII characters without "
                       "spaces (a UUID is a good choice).")
    return raw


def fingerprint(body: object) -> str:
    canonical = json.dumps([request.method, request.path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run(token_id: int, key: str, print_: str, perform: Callable[[], Reply]) -> tuple[Response, Reply | None]:
    """The answer for this key: replayed if stored, else `perform()`'s, stored in its transaction. The Reply is
    returned only when this request did the work (its `after` wakes the workers)."""
    for _ in range(ATTEMPTS):
        try:
            stored = _stored(token_id, key)
            if stored is not None:
                db.session.rollback()
                return _replay(stored, print_), None
            row = _claim(token_id, key, print_)
            try:
                reply = perform()
            except (ApiError, DomainError, HTTPException) as error:
                db.session.rollback()
                answer = response_for(error)
                _fill(_claim(token_id, key, print_), answer.status_code, answer.get_data(as_text=True), None)
                db.session.commit()
                return answer, None
            _fill(row, reply.status, reply.text(), reply.location)
            db.session.commit()
            return reply.response(), reply
        except DBAPIError as error:
            # A concurrent repeat committed this key first (look again), or a unique index of the change itself
            # refused a concurrent twin (the next try's own checks say why), or the connection died.
            if not (isinstance(error, IntegrityError) or error.connection_invalidated):
                raise
            db.session.rollback()
    raise ApiError("idempotency_key_in_use", f"The request with this {HEADER} did not settle; try again.",
                   headers={"Retry-After": "1"})


@dataclass(frozen=True)
class Stored:
    fingerprint: str
    status_code: int
    body: str
    location: str | None


def _stored(token_id: int, key: str) -> Stored | None:
    """The answer stored for the key in the last day, as plain values (they outlive the rollback)."""
    row = db.session.execute(
        select(IdempotentRequest.fingerprint, IdempotentRequest.status_code, IdempotentRequest.body,
               IdempotentRequest.location)
        .where(IdempotentRequest.token_id == token_id, IdempotentRequest.key == key,
               IdempotentRequest.created_at > utcnow() - KEEP)).first()
    return Stored(*row) if row is not None else None


def _claim(token_id: int, key: str, print_: str) -> IdempotentRequest:
    """Insert the key's row (forgetting the token's answers older than a day first); IntegrityError if a
    concurrent request holds or stored it."""
    db.session.execute(delete(IdempotentRequest).where(IdempotentRequest.token_id == token_id,
                                                       IdempotentRequest.created_at <= utcnow() - KEEP)
                       .execution_options(synchronize_session=False))
    row = IdempotentRequest(token_id=token_id, key=key, fingerprint=print_, status_code=0, body="",
                            created_at=utcnow())
    db.session.add(row)
    db.session.flush()
    return row


def _fill(row: IdempotentRequest, status: int, body: str, location: str | None) -> None:
    row.status_code, row.body, row.location = status, body, location


def _replay(stored: Stored, print_: str) -> Response:
    if stored.fingerprint != print_:
        raise ApiError("idempotency_key_reused", f"This {HEADER} was used for another request (another path or "
                       "body) in the last 24 hours; use a new key for a new request.")
    response = Response(stored.body, status=stored.status_code, content_type="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers["Idempotent-Replayed"] = "true"
    response.headers["Cache-Control"] = "no-store"
    return response
