"""Charts from stored samples, drawn server-side as inline SVG (no chart library, no script).

Traffic samples hold a configuration's rx/tx totals at poll times: its chart plots the rate between
consecutive samples, averaged per time bucket (a minute over the last hour, a quarter of an hour over the
last day). Fleet samples hold a tenant's routers online and monitored at one time: its chart plots the last
sample of each bucket. Pure functions: they return a `Plot` in plot units (WIDTH x HEIGHT, stretched to the
page's width by `templates/dashboard/_chart.html`) with its axis ticks, hover titles and a text summary;
the labels are drawn outside the stretched part, so text keeps its size at any width. Times are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from portal.wireguard.models import VpnConfiguration

WIDTH, HEIGHT = 600, 120
RATE_UNITS = ("B/s", "kB/s", "MB/s", "GB/s")
# (longest span, bucket, time between axis labels): 14:00, 14:15 over an hour; 06:00, 12:00 over a day
TIME_SCALES = (
    (timedelta(hours=1), timedelta(minutes=1), timedelta(minutes=15)),
    (timedelta(hours=6), timedelta(minutes=5), timedelta(hours=1)),
    (timedelta(days=1), timedelta(minutes=15), timedelta(hours=6)),
    (timedelta(days=7), timedelta(hours=2), timedelta(days=1)),
)


@dataclass(frozen=True)
class Sample:
    taken_at: datetime
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class FleetPoint:
    taken_at: datetime
    online: int
    monitored: int


@dataclass(frozen=True)
class Tick:
    at: float  # fraction of the axis: 0 at the left or the bottom, 1 at the right or the top
    label: str


@dataclass(frozen=True)
class Line:
    name: str  # its legend: "received"
    css: str  # its class: "rx"
    points: str  # SVG polyline points in plot units, "x,y x,y ..."
    colour: str
    dashed: bool = False  # told apart by more than its colour


@dataclass(frozen=True)
class Bucket:
    x: float  # plot units
    width: float
    title: str  # what hovering shows: "14:04–14:05 UTC — received 1.2 kB/s, sent 300 B/s"


@dataclass(frozen=True)
class Plot:
    lines: tuple[Line, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    buckets: tuple[Bucket, ...]
    summary: str  # the text alternative of the drawing


@dataclass(frozen=True)
class Chart:
    """A configuration's traffic over one window."""

    label: str  # "last hour"
    plot: Plot
    peak_rate: float  # bytes per second at the top of the rate axis
    rx_total: int  # bytes received in the window
    tx_total: int
    samples: int
    last_sample_at: datetime | None

    @property
    def empty(self) -> bool:
        return self.samples < 2

    @property
    def points_rx(self) -> str:
        return self.plot.lines[0].points

    @property
    def points_tx(self) -> str:
        return self.plot.lines[1].points


@dataclass(frozen=True)
class FleetChart:
    """A tenant's routers online (and monitored) over one window."""

    label: str
    plot: Plot
    samples: int
    latest: FleetPoint | None

    @property
    def empty(self) -> bool:
        return self.samples == 0

    @property
    def latest_time(self) -> str:
        return f"{self.latest.taken_at.astimezone(UTC):%H:%M} UTC" if self.latest else ""


def chart(label: str, samples: Sequence[Sample], now: datetime, span: timedelta) -> Chart:
    """Received and sent rates inside [now - span, now], each bucket the mean rate of the intervals between
    samples that end in it."""
    start, (bucket, _) = now - span, scale_for(span)
    inside = sorted((s for s in samples if start <= s.taken_at <= now), key=lambda s: s.taken_at)
    sums: dict[int, list[float]] = {}  # bucket index -> [seconds, rx bytes, tx bytes]
    for before, after in zip(inside, inside[1:], strict=False):
        seconds = (after.taken_at - before.taken_at).total_seconds()
        if seconds > 0:
            totals = sums.setdefault(bucket_index(after.taken_at, bucket), [0.0, 0.0, 0.0])
            totals[0] += seconds
            totals[1] += max(0, after.rx_bytes - before.rx_bytes)
            totals[2] += max(0, after.tx_bytes - before.tx_bytes)
    rates = {index: (rx / seconds, tx / seconds) for index, (seconds, rx, tx) in sorted(sums.items())}
    peak = max((max(pair) for pair in rates.values()), default=0.0)
    top, y_ticks = value_axis(peak, format_rate)
    window = _Window(start, now, bucket)
    lines = (Line("received", "rx", window.points({i: rx for i, (rx, _) in rates.items()}, top), "#0b5cad"),
             Line("sent", "tx", window.points({i: tx for i, (_, tx) in rates.items()}, top), "#126b2f", dashed=True))
    buckets = tuple(window.hover(index, f"received {format_rate(rx)}, sent {format_rate(tx)}")
                    for index, (rx, tx) in rates.items())
    rx_total, tx_total = (int(sum(totals[column] for totals in sums.values())) for column in (1, 2))
    summary = _traffic_summary(label, window, rates, rx_total, tx_total)
    plot = Plot(lines, time_ticks(start, now, span), y_ticks, buckets, summary)
    return Chart(label=label, plot=plot, peak_rate=top, rx_total=rx_total, tx_total=tx_total,
                 samples=len(inside), last_sample_at=inside[-1].taken_at if inside else None)


def fleet_chart(label: str, samples: Sequence[FleetPoint], now: datetime, span: timedelta) -> FleetChart:
    """Routers online and monitored inside [now - span, now], the last sample of each bucket."""
    start, (bucket, _) = now - span, scale_for(span)
    inside = sorted((s for s in samples if start <= s.taken_at <= now), key=lambda s: s.taken_at)
    last = {bucket_index(sample.taken_at, bucket): sample for sample in inside}
    top, y_ticks = value_axis(max((s.monitored for s in last.values()), default=0), lambda count: f"{count:.0f}")
    window = _Window(start, now, bucket)
    lines = (Line("online", "online", window.points({i: s.online for i, s in last.items()}, top), "#126b2f"),
             Line("monitored", "monitored", window.points({i: s.monitored for i, s in last.items()}, top),
                  "#4b5563", dashed=True))
    buckets = tuple(window.hover(index, f"{s.online} online of {s.monitored} monitored")
                    for index, s in last.items())
    latest = max(last.values(), key=lambda s: s.taken_at) if last else None
    summary = f"Routers online, {label} ({window.period}): " + (
        f"now {latest.online} of {latest.monitored} monitored; lowest {min(s.online for s in last.values())}, "
        f"highest {max(s.online for s in last.values())}." if latest else "no samples.")
    plot = Plot(lines, time_ticks(start, now, span), y_ticks, buckets, summary)
    return FleetChart(label=label, plot=plot, samples=len(inside), latest=latest)


def _traffic_summary(label: str, window: _Window, rates: dict[int, tuple[float, float]], rx_total: int,
                     tx_total: int) -> str:
    if not rates:
        return f"Traffic rate, {label} ({window.period}): not enough samples to chart."
    latest = rates[max(rates)]
    peaks = [format_rate(max(pair[column] for pair in rates.values())) for column in (0, 1)]
    return (f"Traffic rate, {label} ({window.period}): received up to {peaks[0]} ({format_bytes(rx_total)} in "
            f"all), sent up to {peaks[1]} ({format_bytes(tx_total)} in all); latest received "
            f"{format_rate(latest[0])}, sent {format_rate(latest[1])}.")


@dataclass(frozen=True)
class _Window:
    """Where times and values fall in plot units."""

    start: datetime
    end: datetime
    bucket: timedelta

    @property
    def period(self) -> str:
        return f"{self.start:%H:%M} to {self.end:%H:%M} UTC"

    def x(self, moment: datetime) -> float:
        return (min(max(moment, self.start), self.end) - self.start) / (self.end - self.start) * WIDTH

    def points(self, values: dict[int, float], top: float) -> str:
        """A point in the middle of each bucket; a lone bucket is a level across its width, so it shows."""
        if len(values) == 1:
            (index, value), = values.items()
            spots = [(self.x(_bucket_start(index, self.bucket)), value),
                     (self.x(_bucket_start(index + 1, self.bucket)), value)]
        else:
            spots = [(self._middle(index), value) for index, value in values.items()]
        return " ".join(f"{x:.1f},{HEIGHT - value / top * HEIGHT:.1f}" for x, value in spots)

    def hover(self, index: int, values: str) -> Bucket:
        begins, ends = _bucket_start(index, self.bucket), _bucket_start(index + 1, self.bucket)
        left = self.x(begins)
        return Bucket(x=round(left, 1), width=round(self.x(ends) - left, 1),
                      title=f"{begins:%H:%M}–{ends:%H:%M} UTC — {values}")

    def _middle(self, index: int) -> float:
        return (self.x(_bucket_start(index, self.bucket)) + self.x(_bucket_start(index + 1, self.bucket))) / 2


def scale_for(span: timedelta) -> tuple[timedelta, timedelta]:
    """The bucket and the time between axis labels for a window of `span`."""
    for longest, bucket, label_every in TIME_SCALES:
        if span <= longest:
            return bucket, label_every
    return TIME_SCALES[-1][1:]


def bucket_index(moment: datetime, bucket: timedelta) -> int:
    return math.floor(moment.timestamp() / bucket.total_seconds())


def _bucket_start(index: int, bucket: timedelta) -> datetime:
    return datetime.fromtimestamp(index * bucket.total_seconds(), UTC)


def time_ticks(start: datetime, end: datetime, span: timedelta) -> tuple[Tick, ...]:
    """Labels at round UTC times inside [start, end]: 14:00, 14:15 ... or 06:00, 12:00 ... or 3 Dec, 4 Dec."""
    step = scale_for(span)[1].total_seconds()
    first = math.ceil(start.timestamp() / step)
    moments = (datetime.fromtimestamp(n * step, UTC) for n in range(first, math.floor(end.timestamp() / step) + 1))
    text = "{:%H:%M}" if step < 86400 else "{:%-d %b}"
    return tuple(Tick(at=(moment - start) / (end - start), label=text.format(moment)) for moment in moments)


def value_axis(peak: float, label: Callable[[float], str]) -> tuple[float, tuple[Tick, ...]]:
    """The top of a value axis from zero and its ticks: steps of 1, 2 or 5 x 10^n, at most five of them."""
    step = nice_ceiling(peak / 5)
    count = max(1, math.ceil(peak / step - 1e-9))
    return step * count, tuple(Tick(at=n / count, label=label(n * step)) for n in range(count + 1))


def nice_ceiling(value: float) -> float:
    """The next of 1, 2, 5 x 10^n at or above `value` (at least 1), so the axis reads well."""
    step = 1.0
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def format_rate(bytes_per_second: float) -> str:
    """'300 B/s', '1.2 kB/s', '45 MB/s': decimal units, two significant digits below ten."""
    return _decimal(bytes_per_second, RATE_UNITS)


def format_bytes(count: float) -> str:
    return _decimal(count, tuple(unit.removesuffix("/s") for unit in RATE_UNITS))


def _decimal(value: float, units: tuple[str, ...]) -> str:
    for unit in units:
        if round(value) < 1000 or unit == units[-1]:
            break
        value /= 1000
    digits = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
    return f"{digits.removesuffix('.0')} {unit}"


def traffic_note(configuration: VpnConfiguration | None, charts: Sequence[Chart], now: datetime,
                 sample_every: int, poll_every: int) -> str | None:
    """Why the traffic panel has nothing (or little) to draw, in words a tenant admin can act on; None when
    every chart has data. `sample_every` and `poll_every` are seconds."""
    if configuration is None:
        return "This router has no configuration, so no traffic passes through a hub."
    hub = configuration.hub
    if not hub.managed:
        return (f"Traffic is not charted: the hub {hub.name} is not managed by the portal, so the portal cannot "
                "read its counters.")
    if charts and not any(chart.empty for chart in charts):
        return None
    if not configuration.on_hub:
        return (f"No traffic to chart: the configuration is {configuration.status}, not active on the hub"
                f"{' (it is being provisioned)' if configuration.status in ('pending', 'provisioning') else ''}.")
    if hub.last_poll_error:
        return (f"No new samples: the hub could not be read at its last poll ({hub.last_poll_error}); the worker "
                f"tries again every {poll_every} s.")
    if hub.last_polled_at is None or now - hub.last_polled_at > timedelta(seconds=3 * poll_every):
        return f"No new samples: the hub has not been polled for a while (every {poll_every} s); is a worker running?"
    waiting = ("" if configuration.last_handshake_at
               else " The router has not connected yet: until it does, the rates stay at zero.")
    sparse = min(charts, key=lambda chart: chart.samples, default=None)
    if sparse is None or sparse.last_sample_at is None:
        return (f"No samples yet: one is stored every {sample_every} s, the first at the "
                f"next poll (every {poll_every} s).{waiting}")
    last = sparse.last_sample_at.astimezone(UTC)
    return (f"One sample in the {sparse.label} so far ({last:%H:%M} UTC): rates need two, so the chart starts "
            f"at about {last + timedelta(seconds=sample_every):%H:%M} UTC (a sample every {sample_every} s)."
            f"{waiting}")
