"""The app's Redis client. Redis holds queues, locks, heartbeats, pub/sub, metrics and counts the database can
give again (`portal.live.reuse`): nothing there is the only copy."""

from __future__ import annotations

from flask import current_app
from redis import Redis

REDIS_EXTENSION = "portal.redis"


def redis_connection() -> Redis:
    """Created on first use (never at import or in create_app)."""
    client = current_app.extensions.get(REDIS_EXTENSION)
    if client is None:
        url = current_app.config["PORTAL_REDIS_URL"]
        if not url:
            raise RuntimeError("PORTAL_REDIS_URL is not set (`make run` starts an embedded Redis for you)")
        client = Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
        current_app.extensions[REDIS_EXTENSION] = client
    return client
