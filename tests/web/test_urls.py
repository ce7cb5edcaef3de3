"""URLs the app remembers per process (`portal.urls`) are the ones Flask builds, whatever the request."""

from __future__ import annotations

from flask import url_for


def built(app, *args, path: str = "/", **kwargs) -> str:
    with app.test_request_context(path, **kwargs.pop("context", {})):
        return url_for(*args, **kwargs)


def test_a_remembered_url_follows_the_script_root_host_and_scheme(app):
    assert built(app, "wireguard.router", router_id=7) == "/routers/7"
    assert built(app, "wireguard.router", router_id=7, context={"base_url": "http://portal.example/vpn"}) \
        == "/vpn/routers/7"
    assert built(app, "wireguard.router", router_id=7, _external=True,
                 context={"base_url": "https://a.example"}) == "https://a.example/routers/7"
    assert built(app, "wireguard.router", router_id=7, _external=True,
                 context={"base_url": "http://b.example"}) == "http://b.example/routers/7"
    assert built(app, "wireguard.router", router_id=7) == "/routers/7"


def test_values_that_are_equal_but_print_differently_get_their_own_url(app):
    assert built(app, "wireguard.routers", q=1) == "/routers?q=1"
    assert built(app, "wireguard.routers", q=True) == "/routers?q=True"
    assert built(app, "wireguard.routers", q=1.0) == "/routers?q=1.0"


def test_lists_and_relative_endpoints_are_built_every_time(app):
    assert built(app, "wireguard.routers", router=[1, 2]) == "/routers?router=1&router=2"
    assert built(app, "wireguard.routers", router=[3]) == "/routers?router=3"
    assert built(app, ".router", router_id=3, path="/routers/1") == "/routers/3"
    assert built(app, ".dashboard", path="/dashboard/fleet") == "/dashboard"  # each request's own blueprint
