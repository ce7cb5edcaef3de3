"""Figures counted over a whole tenant (routers per status, online, clients), kept in Redis and reused until
the tenant's room hears news.

Publishing a status, usage or monitor hint bumps the room's news counter (`portal.live.emit`), after the
commit it tells of. A figure is stored with the counter it was read at; it is reused only while the counter is
unchanged and for at most `seconds` (what changes with time alone, like "online within 3 minutes", is that
stale at worst). A count read while a change commits is stored under the old counter, so the bump retires it.
Without Redis, or with Redis down, the figure is counted on every request, as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy import func, select

from portal.extensions import db
from portal.live.emit import news_key, tenant_room
from portal.redis_client import redis_connection

log = logging.getLogger(__name__)
KEEP_SECONDS = 10  # the longest a figure is reused (online means a handshake within minutes: that stale at worst)


def reuse_until_news(tenant_id: int, figure: str, count: Callable[[], Any], seconds: int = KEEP_SECONDS) -> Any:
    """`count()`'s JSON-able value, the tenant's `figure`, reused from Redis while the tenant's room has had no news,
    for at most `seconds`."""
    room, key = tenant_room(tenant_id), f"portal:figures:{figure}:{tenant_id}"
    try:
        redis = redis_connection()
        news, stored = redis.mget(news_key(room), key)
    except (RuntimeError, RedisError):  # no Redis configured, or it is down: count as if nothing were kept
        return count()
    news = int(news or 0)
    if stored is not None:
        kept = json.loads(stored)
        if kept["news"] == news:
            return kept["value"]
    value = count()
    try:
        redis.set(key, json.dumps({"news": news, "value": value}, separators=(",", ":")), ex=seconds)
    except RedisError as error:
        log.warning("figures for %s not kept, Redis unavailable: %s", room, error)
    return value


def tenant_row_count(model, tenant_id: int) -> int:
    """How many rows of `model` (routers, OpenVPN clients) the tenant has, counted (linear in its size) only after
    news of the tenant."""
    return reuse_until_news(tenant_id, f"rows:{model.__tablename__}",
                            lambda: db.session.scalar(select(func.count()).select_from(model)
                                                      .where(model.tenant_id == tenant_id)))
