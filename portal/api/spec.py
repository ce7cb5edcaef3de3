"""The API's operations, each declared once: its route, the scope it needs, what it takes and what it answers.

`operation` registers the route with a wrapper that authenticates the bearer token, counts the request against
the token's rate limit, checks the scope, validates the query and body with the pydantic models, runs the view
in one unit of work (`portal.actions.commit`, or the idempotent path for a POST with an `Idempotency-Key`), and
wakes the workers after the commit. `document()` builds the OpenAPI 3.1 document from the same declarations and
models, so the document describes what the code does and cannot drift from it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, g, request
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from werkzeug.exceptions import BadRequest
from werkzeug.routing import BaseConverter

from portal.actions import commit
from portal.api import idempotency
from portal.api.auth import authenticate, require_write
from portal.api.errors import CODES, NOT_FOUND, ApiError, from_validation
from portal.api.models import Scope
from portal.api.ratelimit import spend
from portal.api.replies import Reply
from portal.api.schemas import ID_MAX, Error, Query, RequestBody
from portal.downloads import File

REF = "#/components/schemas/{model}"
JSON = "application/json"
MAX_BODY = 64 * 1024  # every request body of the API is a few fields (but a CSV import's: `max_body`)
PATH_PARAMETER = re.compile(r"<(?:(\w+)(?:\([^)]*\))?:)?(\w+)>")


@dataclass(frozen=True)
class Answer:
    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = JSON
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    rule: str  # the Flask rule under the blueprint's /api prefix
    view: Callable[..., Any]
    summary: str
    description: str
    tag: str
    scope: Scope | None  # None: no token needed
    answers: tuple[Answer, ...]
    query: type[Query] | None
    body: type[RequestBody] | None
    errors: tuple[str, ...]  # codes of CODES the view itself may answer with
    max_body: int = MAX_BODY  # bytes

    @property
    def path(self) -> str:
        return "/api" + PATH_PARAMETER.sub(r"{\2}", self.rule)

    @property
    def path_parameters(self) -> list[str]:
        return [match.group(2) for match in PATH_PARAMETER.finditer(self.rule)]


OPERATIONS: list[Operation] = []


class IdConverter(BaseConverter):
    """`<id:name>`: a row id, digits without a leading zero, at most ten of them. Anything else matches no route,
    so it is a 404 whatever the method (Werkzeug's `int` would answer some over-long numbers with a 405)."""

    regex = r"[1-9][0-9]{0,9}"
    part_isolating = True

    def to_python(self, value: str) -> int:
        return int(value)  # above ID_MAX: the wrapper's 404

    def to_url(self, value: int) -> str:
        return str(int(value))


def register_converters(state) -> None:
    state.app.url_map.converters.setdefault("id", IdConverter)


def operation(blueprint: Blueprint, method: str, rule: str, *, summary: str, tag: str, scope: Scope | None,
              answers: tuple[Answer, ...], query: type[Query] | None = None, body: type[RequestBody] | None = None,
              errors: tuple[str, ...] = (), description: str = "", max_body: int = MAX_BODY) -> Callable:
    """Declare and route one operation. The view receives the path's ids, `caller` (when a token is needed),
    `query` and `body` (when declared), and returns a `Reply`, a `File` or a `Response`."""

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        declared = Operation(method, rule, view, summary, description or (view.__doc__ or "").strip(), tag, scope,
                             answers, query, body, errors, max_body)
        OPERATIONS.append(declared)

        @wraps(view)
        def endpoint(**path: Any) -> Response:
            return _handle(declared, path)

        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=endpoint, methods=[method])
        return view

    return decorator


def _handle(declared: Operation, path: dict[str, Any]) -> Response:
    """In this order: the token (401), its rate limit (429), its scope (403), the ids (404), the query and body
    (415, 400, 422), the Idempotency-Key (400); then the view in one unit of work, and the wake-ups after it."""
    kwargs = dict(path)
    caller = None
    if declared.scope is not None:
        caller = authenticate()
        g.api_budget = spend(caller.token_id)
        if declared.scope == Scope.WRITE:
            require_write(caller)
        kwargs["caller"] = caller
    for value in path.values():
        if isinstance(value, int) and not 1 <= value <= ID_MAX:
            raise ApiError("not_found", NOT_FOUND)
    if declared.query is not None:
        kwargs["query"] = _parse(declared.query, request.args.to_dict(flat=True), "query")
    raw_body: object = None
    if declared.body is not None:
        raw_body = _json_body(declared.max_body)
        kwargs["body"] = _parse(declared.body, raw_body, "body")
    key = idempotency.key_of_request() if declared.method == "POST" and caller is not None else None

    def perform():
        return declared.view(**kwargs)

    if key is not None:
        response, reply = idempotency.run(caller.token_id, key, idempotency.fingerprint(raw_body), perform)
    else:
        result = commit(perform)
        reply = result if isinstance(result, Reply) else None
        response = result.response() if isinstance(result, (Reply, File)) else result
    if reply is not None and reply.after is not None:
        reply.after()
    return response


def _parse(model: type[BaseModel], data: object, where: str):
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise from_validation(error, where) from None


def _json_body(limit: int) -> object:
    if request.mimetype != JSON:
        raise ApiError("unsupported_media_type", "Send the body as JSON, with `Content-Type: application/json`.")
    if (request.content_length or 0) > limit:
        size = f"{limit // 1024 // 1024} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"
        raise ApiError("payload_too_large", f"The body is limited to {size}.")
    request.max_content_length = limit  # a body without a length is cut off there too (413)
    try:
        data = request.get_json(force=True, silent=False)
    except BadRequest:
        raise ApiError("invalid_json", "The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ApiError("invalid_json", "The body must be a JSON object.")
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): valid JSON, but no text a database can store
        raise ApiError("invalid_json", "The body's strings must be valid Unicode text.") from None
    return data


# The document ----------------------------------------------------------------------------------------------------

HEADERS = {
    "Location": {"description": "URL of the resource, to poll for its status.", "required": True,
                 "schema": {"type": "string"}},
    "Link": {"description": "`<URL>; rel=\"next\"` and `rel=\"prev\"` where there are such pages.",
             "schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait before trying again.", "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9]+$"}},
    "WWW-Authenticate": {"description": "The bearer challenge.", "required": True, "schema": {"type": "string"}},
    "Content-Disposition": {"description": "`attachment; filename=\"...\"`: the name to save the file under.",
                            "required": True, "schema": {"type": "string"}},
    "Idempotent-Replayed": {"description": "`true` when this is the stored answer to an earlier request with the "
                            "same Idempotency-Key.", "schema": {"type": "string", "enum": ["true"]}},
}
IDEMPOTENCY_PARAMETER = {
    "name": idempotency.HEADER, "in": "header", "required": False,
    "description": "Any unique string (a UUID): a repeat with the same key, from the same token, within 24 hours "
                   "gets the first answer again (with `Idempotent-Replayed: true`) instead of a second change.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def _error_codes(declared: Operation) -> list[str]:
    """The error codes an operation can answer with: its own, and those of the wrapper's steps."""
    codes: list[str] = []
    if declared.scope is not None:
        codes += ["unauthenticated", "invalid_token", "token_expired", "token_revoked", "rate_limited"]
        if declared.scope == Scope.WRITE:
            codes.append("insufficient_scope")
    if declared.path_parameters:
        codes.append("not_found")
    if declared.query is not None or declared.body is not None:
        codes.append("invalid_request")
    if declared.body is not None:
        codes += ["invalid_json", "payload_too_large", "unsupported_media_type"]
    if declared.method == "POST" and declared.scope is not None:
        codes += ["invalid_idempotency_key", "idempotency_key_reused", "idempotency_key_in_use"]
    return list(dict.fromkeys(codes + list(declared.errors)))


def _responses(declared: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for answer in declared.answers:
        content = ({answer.media_type: {"schema": {"$ref": REF.format(model=answer.model.__name__)}}}
                   if answer.model is not None else {answer.media_type: {"schema": {"type": "string"}}})
        headers = list(answer.headers)
        if declared.method == "POST" and declared.scope is not None:
            headers.append("Idempotent-Replayed")
        responses[str(answer.status)] = {"description": answer.description, "content": content,
                                         **({"headers": {name: HEADERS[name] for name in headers}} if headers else {})}
    by_status: dict[int, list[str]] = {}
    for code in _error_codes(declared):
        by_status.setdefault(CODES[code][0], []).append(code)
    for status, codes in sorted(by_status.items()):
        headers = {"429": ["Retry-After"], "401": ["WWW-Authenticate"]}.get(str(status), [])
        if status == 409 and "idempotency_key_in_use" in codes:
            headers = []  # Retry-After comes with that code only
        description = "; ".join(f"`{code}`: {CODES[code][1]}" for code in codes) + "."
        error = {"$ref": REF.format(model="Error")}
        own = responses.get(str(status))
        if own is not None:  # the operation's own answer at an error status (the import's 422): either body
            own["description"] += f" Otherwise the error alone: {description}"
            own["content"][JSON]["schema"] = {"anyOf": [own["content"][JSON]["schema"], error]}
            continue
        responses[str(status)] = {
            "description": description,
            "content": {JSON: {"schema": error}},
            **({"headers": {name: HEADERS[name] for name in headers}} if headers else {}),
        }
    return responses


def _query_parameters(model: type[Query]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    parameters = []
    for name, field in schema["properties"].items():
        field = dict(field)
        description = field.pop("description", None)
        field.pop("title", None)
        if "anyOf" in field:  # `X | None = None`: in a query string, the parameter is simply left out
            (field,) = [{**branch, **{k: v for k, v in field.items() if k not in ("anyOf", "default")}}
                        for branch in field["anyOf"] if branch.get("type") != "null"]
        parameters.append({"name": name, "in": "query", "required": name in required, "schema": field,
                           **({"description": description} if description else {})})
    return parameters


def _path_parameters(declared: Operation) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": ID_MAX}} for name in declared.path_parameters]


def _strip_titles(node: Any) -> Any:
    """Pydantic's generated `title`s repeat the property names; the document reads better without them."""
    if isinstance(node, dict):
        return {key: _strip_titles(value) for key, value in node.items()
                if not (key == "title" and isinstance(value, str))}
    if isinstance(node, list):
        return [_strip_titles(item) for item in node]
    return node


def document(info: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared operation."""
    models: dict[type[BaseModel], str] = {Error: "serialization"}
    for declared in OPERATIONS:
        models.update({answer.model: "serialization" for answer in declared.answers if answer.model is not None})
        if declared.body is not None:
            models[declared.body] = "validation"
    _, top = models_json_schema(list(models.items()), ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for declared in OPERATIONS:
        parameters = _path_parameters(declared)
        if declared.query is not None:
            parameters += _query_parameters(declared.query)
        if declared.method == "POST" and declared.scope is not None:
            parameters.append(IDEMPOTENCY_PARAMETER)
        item: dict[str, Any] = {
            "operationId": declared.view.__name__,
            "summary": declared.summary,
            "tags": [declared.tag],
            "security": [{"bearer": []}] if declared.scope is not None else [],
            "x-scope": declared.scope.value if declared.scope is not None else "none",
            "responses": _responses(declared),
        }
        if declared.description:
            item["description"] = declared.description
        if parameters:
            item["parameters"] = parameters
        if declared.body is not None:
            item["requestBody"] = {"required": True, "content": {
                JSON: {"schema": {"$ref": REF.format(model=declared.body.__name__)}}}}
        paths.setdefault(declared.path, {})[declared.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": info,
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "tags": [{"name": tag} for tag in dict.fromkeys(declared.tag for declared in OPERATIONS)],
        "paths": paths,
        "components": {
            "schemas": _strip_titles(top.get("$defs", {})),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "vpt_ token",
                                           "description": "A tenant's API token (made at /api-tokens)."}},
        },
    }
