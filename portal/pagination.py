"""Pages of rows, and ids and page numbers the database can hold."""

from __future__ import annotations

from werkzeug.routing import IntegerConverter

# Ids are 32-bit integers on PostgreSQL (64-bit on SQLite); a larger one in a URL is simply not there (404),
# never a 500 from the database.
MAX_ID = 2**31 - 1
# Far past any real page, small enough that page x page size stays a valid OFFSET.
MAX_PAGE = 10**9


class IdConverter(IntegerConverter):
    """`<int:...>` in routes: a number the database can hold, else no route matches (404)."""

    def __init__(self, map, *args, **kwargs):  # noqa: A002 (werkzeug's name)
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


def paginate(query, *, page: int, per_page: int):
    """`db.paginate` with a page number clamped to 1..MAX_PAGE (a page past the end is empty, not an error)."""
    from portal.extensions import db

    return db.paginate(query, page=min(max(page, 1), MAX_PAGE), per_page=per_page, error_out=False)
