"""Charts people can read: rate axes in 1-2-5 steps with units, UTC time labels, a value per time bucket on
hover, and an empty chart that says why."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest

from portal.audit.service import Actor
from portal.extensions import db
from portal.types import utcnow
from portal.wireguard import hubs
from portal.wireguard.charts import (
    FleetPoint,
    Sample,
    chart,
    fleet_chart,
    format_rate,
    time_ticks,
    traffic_note,
    value_axis,
)
from portal.wireguard.models import Hub, Router, TrafficSample, VpnConfiguration
from tests import vectors
from tests.conftest import add_router, retire_hub, router_id_from, run_worker, unique

NOW = datetime(2026, 12, 3, 14, 7, 30, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.mark.parametrize(("rate", "label"), [
    (0, "0 B/s"), (0.5, "0.5 B/s"), (300, "300 B/s"), (999, "999 B/s"), (1234, "1.2 kB/s"), (2000, "2 kB/s"),
    (12_345, "12 kB/s"), (999_700, "1 MB/s"), (45e6, "45 MB/s"), (3e12, "3000 GB/s"),
])
def test_rates_read_in_decimal_units_with_two_significant_digits(rate, label):
    assert format_rate(rate) == label


@pytest.mark.parametrize(("peak", "top", "labels"), [
    (200, 200, ["0 B/s", "50 B/s", "100 B/s", "150 B/s", "200 B/s"]),
    (1100, 1500, ["0 B/s", "500 B/s", "1 kB/s", "1.5 kB/s"]),
    (4200, 5000, ["0 B/s", "1 kB/s", "2 kB/s", "3 kB/s", "4 kB/s", "5 kB/s"]),
    (0, 1, ["0 B/s", "1 B/s"]),
])
def test_the_rate_axis_starts_at_zero_and_steps_by_one_two_or_five(peak, top, labels):
    axis_top, ticks = value_axis(peak, format_rate)
    assert axis_top == top and [tick.label for tick in ticks] == labels
    assert ticks[0].at == 0 and ticks[-1].at == 1


def test_time_labels_fall_on_round_utc_times():
    hour = time_ticks(NOW - HOUR, NOW, HOUR)
    assert [tick.label for tick in hour] == ["13:15", "13:30", "13:45", "14:00"]
    assert hour[0].at == pytest.approx(7.5 / 60)  # 13:15 is 7.5 minutes into the hour from 13:07:30
    assert [tick.label for tick in time_ticks(NOW - DAY, NOW, DAY)] == ["18:00", "00:00", "06:00", "12:00"]


def traffic(minutes_ago: float, rx: int, tx: int) -> Sample:
    return Sample(NOW - timedelta(minutes=minutes_ago), rx, tx)


def test_hovering_a_minute_of_the_last_hour_shows_both_rates_with_units():
    samples = [traffic(3, 0, 0), traffic(2, 72_000, 600), traffic(1, 144_000, 18_600)]
    hour = chart("last hour", samples, NOW, HOUR)
    assert [bucket.title for bucket in hour.plot.buckets] == [
        "14:05–14:06 UTC — received 1.2 kB/s, sent 10 B/s",
        "14:06–14:07 UTC — received 1.2 kB/s, sent 300 B/s",
    ]
    assert hour.peak_rate == 1500 and [tick.label for tick in hour.plot.y_ticks][-1] == "1.5 kB/s"
    assert [line.name for line in hour.plot.lines] == ["received", "sent"]
    assert [line.dashed for line in hour.plot.lines] == [False, True]  # told apart without colour
    assert "received up to 1.2 kB/s" in hour.plot.summary and "sent up to 300 B/s" in hour.plot.summary
    assert "13:07 to 14:07 UTC" in hour.plot.summary


def test_the_last_day_averages_each_quarter_hour():
    samples = [traffic(minutes, 600 * (100 - minutes), 0) for minutes in range(1, 40)]  # 10 B/s throughout
    day = chart("last day", samples, NOW, DAY)
    assert {bucket.title.split(" — ")[1] for bucket in day.plot.buckets} == {"received 10 B/s, sent 0 B/s"}
    assert [bucket.title.split(" UTC")[0] for bucket in day.plot.buckets] == [
        "13:15–13:30", "13:30–13:45", "13:45–14:00", "14:00–14:15"]


def test_a_single_rate_is_drawn_across_its_bucket():
    one = chart("last hour", [traffic(2, 0, 0), traffic(1, 6000, 0)], NOW, HOUR)
    assert len(one.points_rx.split()) == 2 and one.points_rx.split()[0] != one.points_rx.split()[1]


def test_the_fleet_chart_keeps_the_last_sample_of_each_bucket():
    points = [FleetPoint(NOW - timedelta(minutes=minutes), online, 5)
              for minutes, online in ((50, 1), (40, 2), (20, 4), (5, 3))]
    fleet = fleet_chart("last day", points, NOW, DAY)
    assert [bucket.title.split(" — ")[1] for bucket in fleet.plot.buckets] == [
        "2 online of 5 monitored", "4 online of 5 monitored", "3 online of 5 monitored"]
    assert [tick.label for tick in fleet.plot.y_ticks] == ["0", "1", "2", "3", "4", "5"]
    assert fleet.latest.online == 3 and fleet.latest_time == "14:02 UTC"
    assert "now 3 of 5 monitored; lowest 2, highest 4" in fleet.plot.summary


def configuration(status: str = "active", driver: str = "ssh", **hub_fields) -> VpnConfiguration:
    hub = Hub(name="hub-1", driver=driver, **{"last_polled_at": NOW - timedelta(seconds=5), **hub_fields})
    return VpnConfiguration(status=status, hub=hub, last_handshake_at=None)


def charts_of(samples: list[Sample]):
    return [chart("last hour", samples, NOW, HOUR), chart("last day", samples, NOW, DAY)]


@pytest.mark.parametrize(("row", "samples", "reason"), [
    (None, [], "This router has no configuration"),
    (configuration(driver="none"), [], "the hub hub-1 is not managed by the portal, so the portal cannot read"),
    (configuration("pending"), [], "the configuration is pending, not active on the hub (it is being provisioned)"),
    (configuration("revoked"), [], "the configuration is revoked, not active on the hub."),
    (configuration(last_poll_error="timed out"), [], "could not be read at its last poll (timed out)"),
    (configuration(last_polled_at=None), [], "has not been polled for a while (every 10 s); is a worker running?"),
    (configuration(), [], "No samples yet: one is stored every 60 s, the first at the next poll (every 10 s). "
                          "The router has not connected yet"),
    (configuration(), [traffic(1, 0, 0)], "One sample in the last hour so far (14:06 UTC): rates need two, so the "
                                          "chart starts at about 14:07 UTC"),
])
def test_an_empty_traffic_chart_says_why(row, samples, reason):
    assert reason in traffic_note(row, charts_of(samples) if row and row.hub.managed else [], NOW, 60, 10)


def test_a_chart_with_rates_needs_no_note():
    samples = [traffic(2, 0, 0), traffic(1, 600, 60)]
    assert traffic_note(configuration(), charts_of(samples), NOW, 60, 10) is None


# The router page ----------------------------------------------------------------------------------

@contextmanager
def router_on_managed_hub(app, client, name: str) -> Iterator[tuple[int, int]]:
    """A router of the client's tenant, active on a hub of its own that the portal manages (as far as the
    pages can tell: nothing reaches the hub); yields (router id, configuration id). The hub is retired after."""
    with app.app_context():
        hub = Hub(name=unique("chart hub"), endpoint_host="hub.example.net", endpoint_port=51820, interface="wg0",
                  public_key=vectors.HUB_PUBLIC_KEY, accepts_new_tenants=False)
        db.session.add(hub)
        db.session.flush()
        hubs.place_tenant(Actor.system("test"), client.tenant_id, hub)
        db.session.commit()
        hub_id = hub.id
    router_id = router_id_from(add_router(client, name))
    run_worker(app)  # the `none` driver puts the peer "on" the hub
    with app.app_context():
        hub = db.session.get(Hub, hub_id)
        hub.driver, hub.last_polled_at = "local", utcnow()
        configuration_id = db.session.get(Router, router_id).current_configuration.id
        db.session.commit()
    try:
        yield router_id, configuration_id
    finally:
        retire_hub(app, hub_id)


def store_traffic(app, configuration_id: int, minutes: int, bytes_per_minute: int = 90_000) -> None:
    """A sample per minute for the last `minutes` minutes, as hub monitoring stores them, with steady traffic."""
    now = utcnow()
    with app.app_context():
        db.session.add_all(TrafficSample(configuration_id=configuration_id, taken_at=now - timedelta(minutes=m),
                                         rx_bytes=(minutes - m) * bytes_per_minute,
                                         tx_bytes=(minutes - m) * bytes_per_minute // 10)
                           for m in range(minutes, 0, -1))
        db.session.commit()


def traffic_panel(client, router_id: int) -> str:
    return unescape(client.get(f"/routers/{router_id}/traffic", headers={"HX-Request": "true"}).get_data(as_text=True))


def test_the_router_page_says_a_hub_the_portal_does_not_manage_is_not_charted(admin_client):
    panel = traffic_panel(admin_client, router_id_from(add_router(admin_client, "Unmanaged")))
    assert "is not managed by the portal" in panel and "<svg" not in panel


def test_the_router_page_draws_rates_with_labelled_axes_and_hover_values(app, admin_client):
    with router_on_managed_hub(app, admin_client, "Charted") as (router_id, configuration_id):
        assert "No samples yet" in traffic_panel(admin_client, router_id)
        store_traffic(app, configuration_id, minutes=30)
        panel = traffic_panel(admin_client, router_id)
    assert "No samples" not in panel
    assert re.search(r'<text class="y-tick"[^>]*>1\.5 kB/s</text>', panel)  # 1.5 kB/s received at the top
    assert re.findall(r'<text class="x-tick"[^>]*>(\d\d:\d\d)</text>', panel)
    assert "received 1.5 kB/s, sent 150 B/s</title>" in panel
    assert 'role="img" aria-label="Traffic rate, last hour' in panel
    assert "received</li>" in panel and "sent</li>" in panel and "times in UTC" in panel
    assert 'preserveAspectRatio="none"' in panel and 'class="line-chart" width="100%"' in panel
