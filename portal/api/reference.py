"""The OpenAPI document as served (built once per app from `portal.api.spec`), and what the reference page needs to
render it: the introduction, and schemas as readable types."""

from __future__ import annotations

from typing import Any

from flask import current_app
from markupsafe import Markup, escape

from portal.api import spec
from portal.api.errors import CODES
from portal.api.idempotency import HEADER

EXTENSION = "portal.api.openapi"


def _introduction() -> str:
    config = current_app.config
    limit, window = config["PORTAL_API_RATE_LIMIT"], config["PORTAL_API_RATE_WINDOW"]
    rate = (f"{limit} requests per {window} seconds per token" if limit > 0 else "no limit (PORTAL_API_RATE_LIMIT=0)")
    codes = "\n".join(f"- `{code}` ({status}): {meaning}" for code, (status, meaning) in CODES.items())
    return f"""The tenant API of the VPN portal: the same routers, WireGuard configurations and OpenVPN clients as the
pages, through the same services, audited with the token's name as the actor.

Authentication: `Authorization: Bearer vpt_...`, a token a tenant admin makes at /api-tokens (shown once, stored
hashed). A `read` token may use every GET, downloads included (they contain private keys); a `write` token may
also create, change, revoke and rotate. Cookies never authenticate an API request.

Rate limit: {rate}, counted in fixed windows. Every answer to a token carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds); past the limit the answer is 429 `rate_limited`
with `Retry-After`.

Changes are asynchronous: a create, revoke or rotate answers 202 (or 201 for a router) once it is committed; a
worker applies it to the hub or OpenVPN server and the status moves on (`pending` -> `provisioning` -> `active`;
`revoking` -> `revoked`). Poll the resource's URL.

Idempotency: a POST may carry `{HEADER}`. Its first answer (status and body) is kept for 24 hours per token and
key and returned for repeats, with `Idempotent-Replayed: true`; concurrent repeats make one resource. The same
key with another path or body is refused (422 `idempotency_key_reused`).

Lists take `page` (from 1) and `per_page` (at most 100); the answer has `total` and `next`, and a `Link`
header with `rel="next"` and `rel="prev"`.

Errors are JSON, `{{"error": {{"code": "...", "message": "..."}}}}`, with a stable code (the message is for
people and may change); validation errors add `details`, one entry per field. Another tenant's ids answer 404
`not_found`, like ids that do not exist. The codes:

{codes}
"""


def document() -> dict[str, Any]:
    cached = current_app.extensions.get(EXTENSION)
    if cached is None:
        cached = spec.document({"title": "VPN portal API", "version": "1", "description": _introduction()})
        current_app.extensions[EXTENSION] = cached
    return cached


def type_label(schema: dict[str, Any]) -> str:
    """A schema as a short type for people: `string`, `integer (1-2147483647)`, `Configuration or null`, ..."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(type_label(branch) for branch in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"{value}" for value in schema["enum"])
    if "const" in schema:
        return f"{schema['const']}"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {type_label(schema.get('items', {}))}"
    limits = []
    if "minimum" in schema or "maximum" in schema:
        limits.append(f"{schema.get('minimum', '')}-{schema.get('maximum', '')}")
    if "maxLength" in schema:
        limits.append(f"at most {schema['maxLength']} characters")
    if "pattern" in schema:
        limits.append(f"matching {schema['pattern']}")
    if schema.get("format"):
        kind = f"{kind} ({schema['format']})"
    return kind + (f" ({'; '.join(limits)})" if limits else "")


def helpers() -> dict[str, Any]:
    return {"type_label": type_label, "inline": inline, "blocks": blocks}


def inline(text: str) -> Markup:
    """Text with `code` spans, escaped."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts)))


def blocks(text: str) -> list[tuple[str, Any]]:
    """A description as paragraphs and bullet lists: [("p", Markup), ("ul", [Markup, ...])]."""
    found: list[tuple[str, Any]] = []
    for chunk in text.strip().split("\n\n"):
        lines = chunk.splitlines()
        if lines and all(line.startswith("- ") for line in lines):
            found.append(("ul", [inline(line[2:]) for line in lines]))
        else:
            found.append(("p", inline(" ".join(line.strip() for line in lines))))
    return found
