"""What an API view returns: a status, a body (a response model), and what to do once it is committed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Response
from pydantic import BaseModel


@dataclass
class Reply:
    status: int
    body: BaseModel
    location: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Run after the commit, never for a replayed answer: wake the worker that does the work. The same wake-ups as
    # the pages; one that Redis does not take is found by the next sweep.
    after: Callable[[], object] | None = None

    def text(self) -> str:
        return json.dumps(self.body.model_dump(mode="json"), separators=(",", ":"))

    def response(self) -> Response:
        response = Response(self.text(), status=self.status, content_type="application/json")
        response.headers.update(self.headers)
        if self.location:
            response.headers["Location"] = self.location
        return response
