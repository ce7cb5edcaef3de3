"""The API's errors: `{"error": {"code": "...", "message": "..."}}` with a stable code, for every failure under
/api, including the router's own 404 and 405 (the app's error handlers hand those over: `is_api_request`)."""

from __future__ import annotations

import logging

from flask import Response, g, jsonify, request
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from portal.downloads import NotDownloadable
from portal.errors import Conflict, DomainError

log = logging.getLogger(__name__)

# Every code the API answers with, and its status. Service errors keep their own codes (DomainError.code).
CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the request could not be read"),
    "invalid_json": (400, "the body is not a JSON object"),
    "invalid_idempotency_key": (400, "the Idempotency-Key header is empty, too long or not printable ASCII"),
    "unauthenticated": (401, "no bearer token was sent"),
    "invalid_token": (401, "the token is unknown"),
    "token_expired": (401, "the token is past its expiry"),
    "token_revoked": (401, "the token was revoked"),
    "insufficient_scope": (403, "a read token asked for a change"),
    "not_found": (404, "no such path, or no such id in the token's tenant (another tenant's ids are not found)"),
    "method_not_allowed": (405, "the path does not take this method"),
    "router_delete_unsupported": (405, "routers are not deleted; revoke their configuration"),
    "conflict": (409, "the row's state forbids the change (for example revoking a revoked configuration)"),
    "not_downloadable": (409, "the configuration or client has no file to download now"),
    "pool_exhausted": (409, "the address pool has no subnet left for a new tenant"),
    "subnet_exhausted": (409, "the tenant's subnet has no address left"),
    "idempotency_key_in_use": (409, "a request with this Idempotency-Key is still running; try again"),
    "payload_too_large": (413, "the body is larger than 64 KiB (8 MiB for a router import)"),
    "unsupported_media_type": (415, "the body must be application/json"),
    "invalid_request": (422, "a parameter or body field is missing or wrong (see details)"),
    "invalid": (422, "the service refused a value (for example a malformed name)"),
    "import_invalid": (422, "the CSV file or some of its rows have errors; nothing was imported (see `rows`)"),
    "idempotency_key_reused": (422, "the Idempotency-Key was used before with another request"),
    "rate_limited": (429, "too many requests with this token; wait Retry-After seconds"),
    "internal_error": (500, "a bug; the message names the request id in the logs"),
    "unavailable": (503, "the database does not answer"),
}
HTTP_CODES = {400: "bad_request", 401: "unauthenticated", 403: "insufficient_scope", 404: "not_found",
              405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 415: "unsupported_media_type",
              422: "invalid_request", 429: "rate_limited"}
NOT_FOUND = "There is nothing here, or it belongs to another tenant."
STATE_CODES = {"pool_exhausted", "subnet_exhausted"}  # DomainErrors that are about state, not input: 409


class ApiError(Exception):
    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None,
                 details: list[dict[str, str]] | None = None, status: int | None = None):
        super().__init__(message)
        self.code, self.message, self.headers, self.details = code, message, headers or {}, details
        self.status = status or CODES.get(code, (422,))[0]

    def response(self) -> Response:
        body: dict = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        response = jsonify(error=body)
        response.status_code = self.status
        response.headers.update(self.headers)
        response.headers["Cache-Control"] = "no-store"
        return response


def is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def from_domain(error: DomainError) -> ApiError:
    if isinstance(error, NotDownloadable):
        return ApiError("not_downloadable", str(error), status=409)
    code = getattr(error, "code", "invalid") or "invalid"
    status = 409 if isinstance(error, Conflict) or code in STATE_CODES else 422
    return ApiError(code, str(error), status=status)


def from_http(error: HTTPException) -> ApiError:
    status = error.code or 500
    code = HTTP_CODES.get(status, "bad_request" if status < 500 else "internal_error")
    messages = {404: NOT_FOUND,
                405: f"{request.method} is not available on {request.path}."}
    headers = {}
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return ApiError(code, messages.get(status, error.description or error.name), headers=headers, status=status)


def from_validation(error: ValidationError, where: str) -> ApiError:
    details = [{"field": ".".join([where, *map(str, problem["loc"])]) if problem["loc"] else where,
                "message": problem["msg"]} for problem in error.errors(include_url=False)]
    return ApiError("invalid_request", f"The {where} has {len(details)} problem{'s' if len(details) != 1 else ''}: "
                    + "; ".join(f"{d['field']}: {d['message']}" for d in details), details=details)


def internal(error: Exception) -> ApiError:
    log.exception("unhandled error in API request %s", g.get("request_id"), exc_info=error)
    return ApiError("internal_error", f"Something went wrong; the error was logged with request id "
                    f"{g.get('request_id', '-')}. Nothing was changed.")


def response_for(error: Exception) -> Response:
    """The JSON answer for any error under /api."""
    if isinstance(error, ApiError):
        return error.response()
    if isinstance(error, DomainError):
        return from_domain(error).response()
    if isinstance(error, HTTPException):
        return from_http(error).response()
    return internal(error).response()
