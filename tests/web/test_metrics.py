"""/metrics: Prometheus text for the operator only, with the fleet's counts from every process."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import add_router, login, run_worker, worker_process
from tests.web.test_ops import PUBLIC


def scrape(app) -> dict[tuple[str, tuple], float]:
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200 and answer.content_type.startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.get_data(as_text=True)) for sample in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_for_the_operator_only(app):
    assert app.test_client().get("/metrics", environ_base=PUBLIC).status_code == 404
    samples = scrape(app)
    assert ("portal_workers_alive", ()) in samples
    assert ("portal_queue_depth", (("kind", "wireguard"),)) in samples


def test_requests_provisions_and_login_failures_are_counted(app, admin_client, tenant_admin):
    before = scrape(app)
    admin_client.get("/routers")
    add_router(admin_client, "Counted")
    run_worker(app)
    login(app.test_client(), tenant_admin[1], password="not the password at all")
    after = scrape(app)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("portal_http_requests_total", route="/routers", method="GET", status="200") >= 1
    assert grew("portal_transitions_total", action="configuration.provision", outcome="succeeded") >= 1
    assert grew("portal_provision_seconds_count", kind="configuration") >= 1
    assert grew("portal_login_failures_total") >= 1
    assert grew("portal_http_request_seconds_bucket", route="/routers", le="+Inf") >= 1


def test_a_worker_in_another_process_reaches_the_scrape(app, admin_client):
    before = value(scrape(app), "portal_transitions_total", action="configuration.provision", outcome="succeeded")
    add_router(admin_client, "Counted elsewhere")
    worker = worker_process("--burst")
    assert worker.wait(timeout=60) == 0  # it flushes its counts as it exits
    deadline = time.monotonic() + 10
    while value(scrape(app), "portal_transitions_total", action="configuration.provision",
                outcome="succeeded") <= before:
        assert time.monotonic() < deadline, "the worker's counts never reached Redis"
        time.sleep(0.2)
