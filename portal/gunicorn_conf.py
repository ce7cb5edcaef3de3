"""gunicorn's settings for the portal (`gunicorn -c python:portal.gunicorn_conf ...`). The command line wins
over these, so the socket tier and the single-process install say `--workers 1 --threads N` there.

Page tier: gthread workers, one per core and one more (PORTAL_WEB_WORKERS), each with a few threads
(PORTAL_WEB_THREADS) for requests that wait on the database: sessions, CSRF and hints need no process of
their own, so any worker can serve any request.
"""

from __future__ import annotations

import os

worker_class = "gthread"
workers = int(os.environ.get("PORTAL_WEB_WORKERS") or 2 * len(os.sched_getaffinity(0)) + 1)
threads = int(os.environ.get("PORTAL_WEB_THREADS") or 4)
