"""Requests per token per window (PORTAL_API_RATE_LIMIT per PORTAL_API_RATE_WINDOW seconds), counted in Redis in
fixed windows. Past the limit: 429 with Retry-After. Without Redis the API goes on unlimited (logged): a Redis
outage must not stop every integration."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from flask import current_app
from redis.exceptions import RedisError

from portal.api.errors import ApiError
from portal.redis_client import redis_connection

log = logging.getLogger(__name__)
KEY = "portal:api-rate:{token_id}:{window}"


@dataclass(frozen=True)
class Budget:
    limit: int
    remaining: int
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset)}


def spend(token_id: int) -> Budget | None:
    """Count one request of the token; its budget, or None when unlimited (limit 0, or Redis away). Raises the 429
    past the limit."""
    limit, window = current_app.config["PORTAL_API_RATE_LIMIT"], current_app.config["PORTAL_API_RATE_WINDOW"]
    if limit <= 0:
        return None
    now = time.time()
    key = KEY.format(token_id=token_id, window=int(now // window))
    try:
        with redis_connection().pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, window + 1)
            used = pipe.execute()[0]
    except RedisError as error:
        log.warning("API rate limit unavailable (Redis: %s); the request goes on unlimited", error)
        return None
    budget = Budget(limit, max(0, limit - used), max(1, math.ceil(window - now % window)))
    if used > limit:
        raise ApiError("rate_limited", f"This token made more than {limit} requests in {window} seconds; try "
                       f"again in {budget.reset} s.", headers={"Retry-After": str(budget.reset), **budget.headers()})
    return budget
