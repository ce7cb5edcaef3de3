"""Background work: the queue and the `job` decorator, the work lock, the fenced runner, and the worker.

The database is the queue of record: a change commits rows in a state that needs work, and enqueueing a job
after the commit only wakes a worker early. Every worker sweeps for due work every few seconds, so a job
lost in Redis costs seconds, not the work. Correctness lives in the database (status + `attempt` fencing);
the Redis lock only keeps two workers from doing the same work at the same time.
"""

from portal.jobs.lock import LockBusy, work_lock
from portal.jobs.queue import Task, current_job_id, job, queue

__all__ = ["LockBusy", "Task", "current_job_id", "job", "queue", "work_lock"]
