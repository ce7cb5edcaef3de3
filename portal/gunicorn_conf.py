"""gunicorn's settings for the portal (`gunicorn -c python:portal.gunicorn_conf ...`). The command line wins
over these, so the socket tier and the single-process install say `--workers 1 --threads N` there.

Page tier: gthread workers, one per core and at least two (PORTAL_WEB_WORKERS), each with two threads
(PORTAL_WEB_THREADS) so a core keeps working while one request waits on the database. Sessions, CSRF and hints
need no process of their own, so any worker can serve any request.

A page costs CPU (Flask, the ORM, Jinja), not waiting, so more processes than cores only take turns: measured
with bench/load.py on 2 cores, 2 workers x 2 threads sustain about 210-220 requests/s where 5 x 4 (the
usual 2 x cores + 1) sustain 150-170, every process warming its own caches and threads queueing for each
process's interpreter lock. Raise the threads where slow requests (a ZIP of 500 routers, a CSV export) are
common, so that they do not hold up pages.
"""

from __future__ import annotations

import os

worker_class = "gthread"
workers = int(os.environ.get("PORTAL_WEB_WORKERS") or max(2, len(os.sched_getaffinity(0))))
threads = int(os.environ.get("PORTAL_WEB_THREADS") or 2)
