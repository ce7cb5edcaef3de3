"""The two gunicorn tiers of a scaled deployment, joined through the Redis message queue:

- the page tier, `gunicorn 'portal.live.tiers:page_tier()'`: several processes (gthread) serving every page,
  fragment, download and API call, and not Socket.IO;
- the socket tier, `gunicorn --workers 1 'portal.live.tiers:socket_tier()'`: one threaded process serving only
  Socket.IO (each open page holds one of its threads for its WebSocket), and `/healthz` for its health check.

A proxy in front sends `/socket.io/` to the socket tier and the rest to the page tier (`deploy/Caddyfile`).
Each tier answers 404 to the other's paths, so a proxy that routes wrongly fails at once instead of letting
WebSockets take the page tier's few threads. `portal:create_app()` alone still serves both (small installs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

SOCKET_PATH = "/socket.io/"
HEALTH_PATH = "/healthz"
NOT_HERE = b"Not served by this tier (see the proxy)\n"

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]


def page_tier() -> WsgiApp:
    return _serving_only(lambda path: not path.startswith(SOCKET_PATH))


def socket_tier() -> WsgiApp:
    return _serving_only(lambda path: path.startswith(SOCKET_PATH) or path == HEALTH_PATH)


def _serving_only(serves: Callable[[str], bool]) -> WsgiApp:
    from portal import create_app

    app = create_app()

    def tier(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if serves(environ.get("PATH_INFO", "")):
            return app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(NOT_HERE)))])
        return [NOT_HERE]

    return tier
