"""The work lock: keeps two workers from working on the same thing at once. It is not what keeps data right
(the fencing token is); it saves duplicated side effects.

The lock's TTL is short and a thread extends it while the work runs, so a worker that dies (SIGKILL,
power) frees its lock within one TTL instead of after the longest job could take.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app
from redis.exceptions import LockError, RedisError

from portal.errors import TransientError
from portal.redis_client import redis_connection

log = logging.getLogger(__name__)

LOCK_PREFIX = "portal:lock:"


class LockBusy(TransientError):
    def __init__(self, name: str):
        super().__init__(f"another worker is working on {name}")


def lock_is_held(name: str) -> bool:
    return bool(redis_connection().exists(LOCK_PREFIX + name))


@contextmanager
def work_lock(name: str, wait: float | None = None) -> Iterator[None]:
    """Hold the lock `name` while working, or raise LockBusy after waiting `wait` seconds (PORTAL_LOCK_WAIT)."""
    config = current_app.config
    ttl = config["PORTAL_LOCK_TTL"]
    lock = redis_connection().lock(LOCK_PREFIX + name, timeout=ttl, thread_local=False,
                                   blocking_timeout=config["PORTAL_LOCK_WAIT"] if wait is None else wait)
    if not lock.acquire():
        raise LockBusy(name)
    stop = threading.Event()
    keeper = threading.Thread(target=_keep_extending, args=(lock, ttl, stop), daemon=True, name=f"lock {name}")
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        try:
            lock.release()
        except (LockError, RedisError):
            log.warning("lock %s expired or Redis was away before release; fencing kept the database safe", name)


def _keep_extending(lock, ttl: float, stop: threading.Event) -> None:
    while not stop.wait(ttl / 3):
        try:
            lock.reacquire()
        except LockError:
            return
        except RedisError:
            continue  # Redis away for a moment: try again at the next tick
