"""Pages of rows, and ids and page numbers the database can hold."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
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


@dataclass(frozen=True)
class Page:
    """One page of rows and where it sits, as `db.paginate`'s pages say it (the templates and the API read both)."""

    items: list
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.per_page)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def prev_num(self) -> int:
        return self.page - 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def next_num(self) -> int:
        return self.page + 1


def paginate_from_both_ends(query, columns: Sequence, *, descending: bool, page: int, per_page: int,
                            total: int | None = None) -> Page:
    """A page of `query` ordered by `columns`. A page in the second half is read from the other end, the order
    reversed, so the last page costs what the first does instead of an OFFSET past every row before it.
    `total` is the query's row count when the caller knows it; otherwise it is counted. A collection the query
    loads with `joinedload` comes in the same statement (hence `unique()`: one row per member)."""
    from portal.extensions import db

    page = min(max(page, 1), MAX_PAGE)
    if total is None:
        total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    start, end = (page - 1) * per_page, min(page * per_page, total)
    if start >= total:
        return Page([], page, per_page, total)
    from_the_end = start * 2 > total
    order = [column.asc() if descending == from_the_end else column.desc() for column in columns]
    offset = total - end if from_the_end else start
    items = db.session.scalars(query.order_by(*order).offset(offset).limit(end - start)).unique().all()
    return Page(list(reversed(items)) if from_the_end else list(items), page, per_page, total)
