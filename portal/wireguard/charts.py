"""Traffic charts from stored samples, drawn server-side as inline SVG points (no chart library, no script).

Samples hold a configuration's rx/tx totals at poll times; a chart plots the rate between consecutive
samples over a window (the last hour, the last day). Pure functions: the template draws the polylines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 600, 120


@dataclass(frozen=True)
class Sample:
    taken_at: datetime
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True)
class Chart:
    label: str  # "last hour"
    points_rx: str  # SVG polyline points, "x,y x,y ..."
    points_tx: str
    peak_rate: float  # bytes per second at the top of the chart
    rx_total: int  # bytes received in the window
    tx_total: int
    samples: int

    @property
    def empty(self) -> bool:
        return self.samples < 2


def chart(label: str, samples: Sequence[Sample], now: datetime, span: timedelta) -> Chart:
    """Rates between consecutive samples inside [now - span, now], scaled into WIDTH x HEIGHT."""
    start = now - span
    inside = sorted((s for s in samples if start <= s.taken_at <= now), key=lambda s: s.taken_at)
    rates = []  # (x, rx rate, tx rate), x at the later sample
    rx_total = tx_total = 0
    for before, after in zip(inside, inside[1:], strict=False):
        seconds = (after.taken_at - before.taken_at).total_seconds()
        if seconds <= 0:
            continue
        rx, tx = max(0, after.rx_bytes - before.rx_bytes), max(0, after.tx_bytes - before.tx_bytes)
        rx_total, tx_total = rx_total + rx, tx_total + tx
        x = (after.taken_at - start).total_seconds() / span.total_seconds() * WIDTH
        rates.append((x, rx / seconds, tx / seconds))
    peak = nice_ceiling(max((max(rx, tx) for _, rx, tx in rates), default=0.0))

    def points(index: int) -> str:
        return " ".join(f"{x:.1f},{HEIGHT - rate[index - 1] / peak * HEIGHT:.1f}"
                        for x, *rate in rates) if rates else ""

    return Chart(label=label, points_rx=points(1), points_tx=points(2), peak_rate=peak,
                 rx_total=rx_total, tx_total=tx_total, samples=len(inside))


def nice_ceiling(value: float) -> float:
    """The next of 1, 2, 5 x 10^n at or above `value` (at least 1 byte/s), so the axis reads well."""
    step = 1.0
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10
