"""URLs built once per process and reused: a page's links repeat (each row of a list links to its router, every
page's header to the same places), and werkzeug builds each in tens of microseconds, a tenth of a list page.

A URL depends only on the endpoint, its values and the request's URL adapter (script root, host, scheme), so
those are the key. Calls that could depend on more are built every time: outside a request, relative endpoints
(".name"), values that cannot be hashed, and any app with URL default functions (they may read `g`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, has_request_context
from flask.globals import request_ctx

REMEMBERED = 20_000  # URLs per process before the memory starts over (ids make them many; each is short)


class Portal(Flask):
    """Flask, with `url_for` remembering what it built."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._built_urls: dict[tuple, str] = {}

    def url_for(self, endpoint: str, /, **values: Any) -> str:
        key = self._url_key(endpoint, values)
        if key is None:
            return super().url_for(endpoint, **values)
        built = self._built_urls.get(key)
        if built is None:
            built = super().url_for(endpoint, **values)
            if len(self._built_urls) >= REMEMBERED:
                self._built_urls.clear()
            self._built_urls[key] = built
        return built

    def _url_key(self, endpoint: str, values: dict[str, Any]) -> tuple | None:
        if not has_request_context() or endpoint.startswith(".") or any(self.url_default_functions.values()):
            return None
        adapter = request_ctx.url_adapter
        if adapter is None:
            return None
        try:  # the type too: True and 1 are equal keys but different URLs
            return (endpoint, adapter.script_name, adapter.server_name, adapter.url_scheme, adapter.subdomain,
                    frozenset((name, type(value), value) for name, value in values.items()))
        except TypeError:  # a list among the values
            return None
