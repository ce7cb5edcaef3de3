"""The worker's part of the dashboard: a sample of every tenant's fleet per round, thinned as it ages."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app

from portal.dashboard import service
from portal.dashboard.models import FleetSample
from portal.extensions import db
from portal.jobs import job
from portal.types import utcnow
from portal.wireguard.hubs import thin_series


@job("sample every tenant's routers online")
def sample_fleets() -> str:
    """Runs every PORTAL_TRAFFIC_SAMPLE_INTERVAL (periodic work of every worker, once across the fleet); the
    online counts come from the handshakes that hub monitoring stores."""
    now = utcnow()
    stored = service.sample_fleets(now)
    thin_series(FleetSample, FleetSample.tenant_id, now,
                timedelta(days=current_app.config["PORTAL_TRAFFIC_RETENTION_DAYS"]))
    db.session.commit()
    return f"{stored} tenant(s) sampled"
