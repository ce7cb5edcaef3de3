"""The worker: RQ's non-forking worker with the app built once, a heartbeat the portal owns, and the periodic
work (sweep, monitoring, reconciliation) run by threads of the worker process itself.

No helper process is forked: RQ's scheduler runs as a forked child that outlives a SIGKILLed worker and keeps
its Redis sockets, so Redis kept the dead worker's blocking pop open and swallowed the next job. Retries need
no scheduler here either: a row that must wait carries its own `retry_at`, and the sweep picks it up.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flask import Flask, g
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from portal.extensions import db
from portal.jobs.queue import queue
from portal.logs import log_job
from portal.redis_client import redis_connection

log = logging.getLogger(__name__)

HEARTBEATS = "portal:workers"  # a sorted set: worker name -> time of its last heartbeat
HEARTBEAT_INTERVAL = 2.0
HEARTBEAT_TTL = 3 * HEARTBEAT_INTERVAL  # a worker silent this long is dead (SIGKILL, power, partition)
TICK_PREFIX = "portal:tick:"
# RQ's own registration (which we no longer count) is refreshed every WORKER_TTL - 15 s while idle.
WORKER_TTL = 60


@dataclass(frozen=True)
class Periodic:
    """Work one worker of the fleet does every `interval_setting` seconds."""

    function: Callable[[], Any]
    interval_setting: str

    @property
    def name(self) -> str:
        return f"{self.function.__module__}.{self.function.__qualname__}"


class AppWorker(SimpleWorker):
    """A non-forking RQ worker that runs each job inside its own app context.

    Not forking keeps the preloaded app: a forking worker pays 20-300 ms per job to rebuild state.
    """

    max_connection_wait_time = 2.0  # back on a restarted Redis within two seconds, not a minute

    def __init__(self, queues, *, app: Flask, **kwargs):
        super().__init__(queues, serializer=JSONSerializer, worker_ttl=WORKER_TTL, **kwargs)
        self.app = app

    stopping = False  # a person or the supervisor asked it to stop (SIGTERM, SIGINT)

    def execute_job(self, job: Job, queue: Queue):
        started = time.perf_counter()
        with self.app.app_context():
            try:
                return super().execute_job(job, queue)
            finally:
                log_job(job.id, job.func_name, job.get_status(refresh=False) or "unknown", started)

    def subscribe(self):
        """RQ's, with the thread that listens for commands waking every second rather than every minute.

        RQ stops that thread after unsubscribing, and redis-py (8.2) waits for it to end: a thread that read the
        unsubscribe's reply before the stop went back to waiting, a whole minute, for a subscription that never
        came. A burst worker took a minute to exit and a stopped one did not heed SIGTERM for as long."""
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=1, daemon=True, exception_handler=self._pubsub_exception_handler)

    def request_stop(self, signum, frame):
        self.stopping = True
        super().request_stop(signum, frame)


def make_worker(app: Flask, name: str | None = None) -> AppWorker:
    with app.app_context():
        return AppWorker([queue()], app=app, connection=redis_connection(), name=name)


def run(app: Flask, periodic: Sequence[Periodic] = (), *, burst: bool = False, name: str | None = None) -> None:
    """Work until stopped (or, with `burst`, until the queue is empty, with no heartbeat or periodic work)."""
    worker = make_worker(app, name=name)
    heartbeat_name, stop = worker.name, threading.Event()
    if not burst:
        threads = [threading.Thread(target=_heartbeat, args=(app, heartbeat_name, stop), name="heartbeat")]
        threads += [threading.Thread(target=_every, args=(app, task, stop), name=task.name) for task in periodic]
        for thread in threads:
            thread.daemon = True
            thread.start()
    try:
        for restart in itertools.count(1):
            _work(worker, burst)
            if burst or worker.stopping:
                break
            # RQ's loop quits on an error it does not expect (Redis gone while a job's result is saved): the
            # process goes on with a fresh worker, so a Redis outage never needs a person to restart workers.
            log.warning("worker %s left its loop without being asked to stop; starting again", worker.name)
            time.sleep(1)
            worker = make_worker(app, name=f"{name}-{restart}" if name else None)
    finally:
        stop.set()
        if not burst:
            with app.app_context():
                _forget(heartbeat_name)


def _work(worker: AppWorker, burst: bool) -> None:
    try:
        worker.work(burst=burst)
    except Exception:  # RQ's own teardown can fail the same way (Redis still away)
        if burst:
            raise
        log.exception("worker %s stopped on an error", worker.name)


def live_workers(redis: Redis) -> int:
    """Workers whose heartbeat is fresh; right within one heartbeat TTL after a SIGKILL or a FLUSHALL. Pages ask
    on every request, so this only counts: the live workers' heartbeats prune the stale ones."""
    return redis.zcount(HEARTBEATS, time.time() - HEARTBEAT_TTL, "+inf")


def _heartbeat(app: Flask, name: str, stop: threading.Event) -> None:
    with app.app_context():
        while True:
            try:
                _beat(redis_connection(), name)
            except Exception as error:  # Redis away: the next beat tries again
                log.warning("heartbeat failed: %s", error)
            if stop.wait(HEARTBEAT_INTERVAL):
                return


def _beat(redis: Redis, name: str) -> None:
    """This worker's heartbeat, and the stale ones (of workers killed without a goodbye) pruned."""
    now = time.time()
    with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(HEARTBEATS, {name: now})
        pipe.zremrangebyscore(HEARTBEATS, "-inf", now - HEARTBEAT_TTL)
        pipe.execute()


def _forget(name: str) -> None:
    try:
        redis_connection().zrem(HEARTBEATS, name)
    except Exception as error:
        log.warning("could not remove the heartbeat of %s: %s", name, error)


def _every(app: Flask, task: Periodic, stop: threading.Event) -> None:
    """Run `task` once per interval across the fleet: the worker that sets the interval's tick key runs it."""
    interval = app.config[task.interval_setting]
    while not stop.wait(interval):
        with app.app_context():
            try:
                if redis_connection().set(TICK_PREFIX + task.name, "1", nx=True, ex=max(1, round(interval * 0.8))):
                    task.function()
                    db.session.commit()
            except Exception:  # the database or Redis away for a moment: the next interval tries again
                db.session.rollback()
                log.exception("periodic %s failed", task.name)
            finally:
                db.session.remove()


def no_worker_alive() -> bool:
    """True when no worker would take queued work now (pages say so beside work that waits); asked once per
    request."""
    if "no_worker_alive" not in g:
        try:
            g.no_worker_alive = live_workers(redis_connection()) == 0
        except Exception as error:
            log.warning("cannot count live workers: %s", error)
            g.no_worker_alive = True
    return g.no_worker_alive
