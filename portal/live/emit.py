"""Sending hints to browsers from any process, web or worker, through the Redis message queue.

Services say what changed (`portal.live.status_changed(...)` and friends); the hint waits on the database
session and goes out only after the transaction commits (a hint about uncommitted state would make the page
fetch the old state), and is dropped if it rolls back. Every web process subscribes to the queue's channel
and delivers each hint to the sockets in its room, so a hint from a worker and one from a web process travel
the same way.

The messages are the ones python-socketio's `PubSubManager` publishes (`emit`), plus one of ours
(`DISCONNECT_ROOM`), which `portal.live.server.LiveRedisManager` handles. Hints are coalesced per room and
panel on their way (`portal.live.coalesce`): at most one per 250 ms, the last one always sent. Delivery is at
most once: a lost hint costs nothing, because pages re-fetch their fragments when they (re)connect.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from flask import current_app
from redis import Redis
from redis.exceptions import NoScriptError, RedisError
from sqlalchemy import event

from portal.extensions import db
from portal.live.coalesce import Coalescer

log = logging.getLogger(__name__)

CHANNEL = "flask-socketio"  # Flask-SocketIO's default channel: every web process listens on it
NAMESPACE = "/"
DISCONNECT_ROOM = "portal:disconnect_room"
PUBLISHER_EXTENSION = "portal.live.publisher"
PENDING = "portal.live.pending"


# Hints after which what a room's pages count (routers per status, online, subnet use) may differ. Publishing one
# bumps the room's news counter, on which `portal.live.reuse` keys the figures it keeps.
COUNTED_EVENTS = frozenset({"status", "usage", "monitor"})


def news_key(room: str) -> str:
    return f"portal:live:news:{room}"


def tenant_room(tenant_id: int) -> str:
    return f"tenant:{tenant_id}"


def user_room(user_id: int) -> str:
    return f"user:{user_id}"


def session_room(login_session_id: int) -> str:
    return f"session:{login_session_id}"


class Publisher:
    """Publishes messages on the queue's channel, all of one transaction in one round trip."""

    def __init__(self, url: str):
        self.redis = Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        self.host_id = uuid.uuid4().hex  # never equal to a web process's own id, so every process delivers
        self.coalescer = Coalescer(self.redis, CHANNEL)

    def emit_message(self, event_name: str, data: dict[str, Any], room: str) -> dict[str, Any]:
        return {"method": "emit", "event": event_name, "data": [data], "binary": False, "namespace": NAMESPACE,
                "room": room, "skip_sid": None, "callback": None, "host_id": self.host_id}

    def disconnect_message(self, room: str) -> dict[str, Any]:
        return {"method": DISCONNECT_ROOM, "room": room, "namespace": NAMESPACE, "host_id": self.host_id}

    def _send(self, messages: list[dict[str, Any]]) -> None:
        pipeline, news = self.redis.pipeline(transaction=False), set()
        for message in messages:
            encoded = json.dumps(message, separators=(",", ":"))
            if message["method"] == "emit":
                self.coalescer.add(pipeline, encoded, message["room"], message["event"], message["data"][0].get("kind"))
                if message["event"] in COUNTED_EVENTS:
                    news.add(message["room"])
            else:
                pipeline.publish(CHANNEL, encoded)
        for room in news:  # after the hints' commands, so results[:len(messages)] are theirs
            pipeline.incr(news_key(room))
        results = pipeline.execute(raise_on_error=False)[:len(messages)]
        unknown = [message for message, result in zip(messages, results, strict=True)
                   if isinstance(result, NoScriptError)]
        if unknown:  # Redis restarted since the script was loaded
            self.coalescer.load()
            self._send(unknown)
        for result in results:
            if isinstance(result, RedisError) and not isinstance(result, NoScriptError):
                raise result

    def publish(self, messages: list[dict[str, Any]]) -> bool:
        """True if Redis took them all; a failure is logged, never raised (these are hints)."""
        if not messages:
            return True
        try:
            self._send(messages)
            return True
        except RedisError as error:
            log.warning("live: %d hint(s) not published, Redis unavailable: %s", len(messages), error)
            return False


def publisher() -> Publisher | None:
    """The app's publisher, made on first use (never at import or in create_app); None without Redis."""
    app = current_app._get_current_object()
    found = app.extensions.get(PUBLISHER_EXTENSION)
    if found is None:
        url = app.config.get("PORTAL_REDIS_URL")
        if not url:
            return None
        found = app.extensions[PUBLISHER_EXTENSION] = Publisher(url)
    return found


def queue_emit(event_name: str, room: str, payload: dict[str, Any], key: tuple) -> None:
    """Send `payload` to `room` once the current transaction commits; the latest one per `key` wins."""
    session = db.session()
    if not session.in_transaction():
        session.begin()  # so that a rollback before any statement still drops the hint
    pending = session.info.setdefault(PENDING, {})
    pending.pop(key, None)  # a later hint about the same thing moves to the end
    pending[key] = (event_name, room, {**payload, "at": round(time.time(), 3)})


def queue_disconnect(room: str) -> None:
    """Disconnect every socket in `room` on every web process once the current transaction commits (a role
    change must be committed before the client reconnects, or it would reconnect with the old role)."""
    session = db.session()
    if not session.in_transaction():
        session.begin()
    session.info.setdefault(PENDING, {})[("disconnect", room)] = (None, room, None)


def emit_now(event_name: str, room: str, payload: dict[str, Any]) -> bool:
    """Send one hint now, outside any transaction (tests, benchmarks, commands), coalesced like the others."""
    found = publisher()
    if found is None:
        return False
    return found.publish([found.emit_message(event_name, {**payload, "at": round(time.time(), 3)}, room)])


def disconnect_room(room: str) -> bool:
    """Disconnect every socket in `room`, on every web process."""
    found = publisher()
    if found is None:
        return False
    return found.publish([found.disconnect_message(room)])


def _send_pending(session) -> None:
    pending = session.info.pop(PENDING, None)
    if not pending:
        return
    try:
        found = publisher()
    except RuntimeError:  # no app context: nothing to send with
        return
    if found is not None:
        found.publish([found.emit_message(name, payload, room) if name else found.disconnect_message(room)
                       for name, room, payload in pending.values()])


def _drop_pending(session, transaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit (or after sending)
        session.info.pop(PENDING, None)


def listen_for_commits() -> None:
    """Hook the session once: send queued hints after commit, forget them after rollback."""
    if not event.contains(db.session, "after_commit", _send_pending):
        event.listen(db.session, "after_commit", _send_pending)
        event.listen(db.session, "after_transaction_end", _drop_pending)
