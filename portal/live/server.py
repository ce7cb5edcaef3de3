"""The Socket.IO server of a web process: who may connect, which rooms they join, and disconnects.

- A connection needs a logged-in, active user (the Flask session cookie of the page); anyone else is
  refused with "unauthorized". Rooms are chosen here, never by the client: a tenant admin joins their
  tenant's room; everyone joins a room for their user and one for their login session, which
  `portal.live.disconnect_user` / `disconnect_session` empty on every web process (logout, role change).
  Platform staff join the room of the tenant they are looking at (an impersonation), and no other; starting
  and ending an impersonation closes the session's sockets, which reconnect into the right rooms.
- The web process listens on the Redis message queue (`LiveRedisManager`). While it cannot, it is not
  live: it disconnects its sockets and refuses new ones with "unavailable"; the page shows
  "reconnecting", retries with backoff, and re-fetches its fragments once it is back.
- It also sends the trailing hints of coalescing windows that have ended (`portal.live.coalesce.Flusher`).
  Both start with the first socket, so a process that only serves pages (the page tier) runs neither.

Async mode is threading (one thread per WebSocket, simple-websocket), under Werkzeug for `make run` and
tests and gunicorn's gthread worker in production; eventlet is not used.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, current_app, g
from flask_login import current_user
from flask_socketio import ConnectionRefusedError, SocketIO, join_room
from socketio import RedisManager

from portal.live.coalesce import Flusher
from portal.live.emit import (
    CHANNEL,
    DISCONNECT_ROOM,
    NAMESPACE,
    listen_for_commits,
    session_room,
    tenant_room,
    user_room,
)
from portal.tenancy.impersonation import live_for_session
from portal.tenancy.models import Role

log = logging.getLogger(__name__)

ASYNC_MODE = "threading"
SESSION_KEY = "live_session"  # a random token per login session, set at login
UNAUTHORIZED = "unauthorized"
UNAVAILABLE = "unavailable"
CONNECT_WAIT = 3.0  # seconds a connect waits for this process to (re)subscribe to the queue
RETRY_FIRST, RETRY_MAX = 0.25, 2.0  # the queue listener's reconnect backoff


class LiveRedisManager(RedisManager):
    """python-socketio's Redis manager, plus: a "listening" state that connects wait for, every local
    socket disconnected when the queue is lost, a quick capped reconnect, and `DISCONNECT_ROOM`."""

    def __init__(self, url: str):
        super().__init__(url, channel=CHANNEL, redis_options={"socket_connect_timeout": 2,
                                                               "socket_keepalive": True})
        self.listening = threading.Event()

    def initialize(self):  # python-socketio calls this at the first connect
        super().initialize()
        self.server.start_background_task(Flusher(self.redis_url, self.channel).run_forever)

    def wait_listening(self, timeout: float) -> bool:
        return self.listening.wait(timeout)

    def _redis_listen_with_retries(self):  # replaces the parent's: capped backoff, state changes
        retry_sleep = RETRY_FIRST
        while True:
            try:
                self._redis_connect()
                self.pubsub.subscribe(self.channel)
                self.pubsub.ping()  # answered after the subscription: from here on no message is missed
                for message in self.pubsub.listen():
                    if message.get("type") == "pong":
                        if not self.listening.is_set():
                            log.info("live: listening on the message queue")
                            self.listening.set()
                        retry_sleep = RETRY_FIRST
                        continue
                    yield message
            except Exception as error:  # connection lost, Redis restarting
                if self.listening.is_set():
                    self.listening.clear()
                    log.warning("live: lost the message queue (%s); disconnecting local sockets", error)
                    self.disconnect_local(None)
                time.sleep(retry_sleep)
                retry_sleep = min(retry_sleep * 2, RETRY_MAX)

    def _listen(self):
        channel = self.channel.encode()
        for message in self._redis_listen_with_retries():
            if message.get("channel") != channel or message.get("type") != "message":
                continue
            try:
                data = self.json.loads(message["data"])
            except ValueError:
                continue
            if isinstance(data, dict) and data.get("method") == DISCONNECT_ROOM:
                self.disconnect_local(data.get("room"))
                continue
            yield data

    def disconnect_local(self, room: str | None) -> None:
        """Disconnect this process's sockets in `room` (None: all of them)."""
        for sid, _ in list(self.get_participants(NAMESPACE, room)):
            try:
                self.server.disconnect(sid, namespace=NAMESPACE, ignore_queue=True)
            except Exception:  # the socket went away meanwhile
                log.debug("live: could not disconnect %s", sid, exc_info=True)


def init_app(app: Flask) -> SocketIO:
    """A Socket.IO server for this app (one per app: Flask-SocketIO keeps its server on the instance)."""
    socketio = SocketIO()
    socketio.on_event("connect", _on_connect)
    url = app.config.get("PORTAL_REDIS_URL")
    options = {"client_manager": LiveRedisManager(url)} if url else {}
    # Same-origin only (the default); WebSocket first, long-polling kept for clients that cannot upgrade.
    socketio.init_app(app, async_mode=ASYNC_MODE, **options)
    listen_for_commits()
    return socketio


def _manager():
    return current_app.extensions["socketio"].server.manager


def _on_connect(auth=None):  # `auth` from the client is ignored: rooms are decided here
    user = current_user
    if not user.is_authenticated or not user.is_active:
        raise ConnectionRefusedError(UNAUTHORIZED)
    manager = _manager()
    if isinstance(manager, LiveRedisManager) and not manager.wait_listening(CONNECT_WAIT):
        raise ConnectionRefusedError(UNAVAILABLE)
    join_room(user_room(user.id))
    login_session_id = g.get("login_session_id")  # set when the user was loaded from a live session
    if login_session_id is not None:
        join_room(session_room(login_session_id))
    tenant_id = _tenant_of(user, login_session_id)
    if tenant_id is not None:
        join_room(tenant_room(tenant_id))


def _tenant_of(user, login_session_id: int | None) -> int | None:
    """The one tenant whose hints this socket gets: a tenant admin's own; for staff, the tenant they are
    looking at (their sockets are closed when that ends, and reconnect into no tenant room)."""
    if user.role == Role.TENANT_ADMIN:
        return user.tenant_id
    looking = live_for_session(login_session_id)
    return looking.tenant_id if looking is not None else None
