"""The router page's traffic chart in a real browser (Debian Chromium driven by Playwright): labelled axes and a
legend that keep their size from a 375 px phone to a desktop, a value on hover, and no sideways scrolling.

System test: needs /usr/bin/chromium and the playwright package; skips without them, fails in CI.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import served
from tests.system.test_browser_live import Person, screenshots_on_failure
from tests.system.test_pages_layout import AXE
from tests.system.test_pages_layout import _axe_findings as axe_findings
from tests.wireguard.test_charts import router_on_managed_hub, store_traffic

pytestmark = pytest.mark.system

PHONE, DESKTOP = {"width": 375, "height": 812}, {"width": 1280, "height": 900}
SIDEWAYS = "document.documentElement.scrollWidth > window.innerWidth"


def test_the_traffic_chart_has_axes_a_legend_and_hover_values_at_phone_width(app, chromium, admin_client,
                                                                              tenant_admin):
    with router_on_managed_hub(app, admin_client, "Charted in a browser") as (router_id, configuration_id):
        store_traffic(app, configuration_id, minutes=50)
        with served(app) as base_url:
            person = Person(chromium, base_url)
            person.context.add_init_script(path=str(AXE))  # axe-core, vendored, for the accessibility check
            router = {"path": f"/routers/{router_id}"}
            try:
                with screenshots_on_failure(person, "traffic-chart", router):
                    page = person.log_in(tenant_admin[1])
                    page.set_viewport_size(PHONE)
                    person.open(page, router["path"])
                    hour = page.locator("#traffic-chart figure").first
                    chart = hour.locator("svg.line-chart")

                    assert "kB/s" in " ".join(chart.locator("text.y-tick").all_text_contents())
                    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in chart.locator("text.x-tick")
                               .all_text_contents())
                    legend = hour.locator(".chart-legend").inner_text()
                    assert "received" in legend and "sent" in legend and "UTC" in legend
                    assert not page.evaluate(SIDEWAYS)
                    assert axe_findings(page) == []  # no serious or critical accessibility violation
                    box = chart.bounding_box()
                    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
                    phone_label = chart.locator("text.y-tick").last.bounding_box()
                    assert phone_label["height"] >= 10  # drawn at its own size, not shrunk with the plot

                    bucket = chart.locator("rect.bucket").last
                    bucket.hover()
                    assert bucket.evaluate("rect => rect.matches(':hover')")
                    assert re.fullmatch(r"\d\d:\d\d–\d\d:\d\d UTC — received 1\.5 kB/s, sent 150 B/s",
                                        bucket.locator("title").text_content())

                    person.open(page, "/dashboard")
                    assert page.locator("#online-history").inner_text().count("No samples yet") == 1
                    assert not page.evaluate(SIDEWAYS)

                    page.set_viewport_size(DESKTOP)
                    person.open(page, router["path"])
                    page.wait_for_load_state("networkidle")  # the panels the socket's connect re-fetches are in
                    chart.wait_for()
                    assert chart.bounding_box()["width"] > 2 * box["width"]
                    assert chart.locator("text.y-tick").last.bounding_box()["height"] == pytest.approx(
                        phone_label["height"], abs=1)
                    assert person.errors == []  # no CSP violation (no inline style), no failed request
            finally:
                person.close()
