"""The one place that scopes tenant-owned rows: another tenant's id is a 404, never a 403."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from flask import abort

from portal.extensions import db

Owned = TypeVar("Owned", bound=db.Model)


def get_owned_or_404(model: type[Owned], row_id: int, tenant_id: int | None, options: Sequence = ()) -> Owned:
    """Load `model` row `row_id` (with loader `options`) if it belongs to `tenant_id`; abort with 404 otherwise."""
    row = db.session.get(model, row_id, options=options)
    if row is None or tenant_id is None or row.tenant_id != tenant_id:
        abort(404)
    return row
