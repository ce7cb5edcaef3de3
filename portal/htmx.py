"""Page-or-fragment rendering for HTMX requests."""

from __future__ import annotations

from flask import make_response, redirect, render_template, request


def wants_fragment() -> bool:
    """An HTMX request that is neither boosted nor a history restore gets the fragment alone."""
    headers = request.headers
    return (headers.get("HX-Request") == "true" and headers.get("HX-Boosted") != "true"
            and headers.get("HX-History-Restore-Request") != "true")


def page_or_fragment(page_template: str, fragment_template: str, **context):
    """Render the fragment for a plain HTMX request, else the whole page (which includes the fragment)."""
    response = make_response(render_template(fragment_template if wants_fragment() else page_template, **context))
    response.vary.add("HX-Request")
    return response


def redirect_after_post(location: str):
    """See-other for a plain form; for htmx, `HX-Redirect` so it loads the page instead of swapping it in."""
    if request.headers.get("HX-Request") == "true":
        response = make_response("", 200)
        response.headers["HX-Redirect"] = location
        return response
    return redirect(location, 303)
