# The portal's image. Its own command is the small install: one process serving pages and Socket.IO on port 8000
# (`docker run IMAGE`; workers: `docker run IMAGE python worker.py`). compose.yaml runs the same image as the
# page tier, the socket tier and the workers, behind a proxy (see README, Deployment).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLASK_APP=portal \
    PORTAL_ENV=production

RUN useradd --create-home --uid 10001 portal
WORKDIR /app

COPY pyproject.toml README.md ./
COPY portal ./portal
# Editable, so the package finds templates/, static/ and migrations/ beside it in /app.
RUN pip install --no-cache-dir -e .

COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
COPY worker.py ./
RUN mkdir instance && chown portal instance

USER portal
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=3)"

# Migrations run by command before the web server starts, never inside create_app.
# One process; each open page holds a thread for its WebSocket (Socket.IO, threading async mode).
CMD ["sh", "-c", "flask db upgrade && exec gunicorn -c python:portal.gunicorn_conf --bind 0.0.0.0:8000 --workers 1 --threads ${PORTAL_WEB_THREADS:-512} 'portal:create_app()'"]
