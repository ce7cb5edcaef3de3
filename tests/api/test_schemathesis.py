"""A property-based run of schemathesis against /api/openapi.json, through the WSGI app.

For every operation of the document, hypothesis generates requests from its schema: valid ones, and invalid ones
that break the schema on purpose. Sent with a write token, none may get a 5xx, and every answer must conform to
the document: a documented status, a body and headers that match their schemas, the documented content type,
a 4xx for every request the schema forbids, and (for each success) a 401 for the same request without the
token or with a wrong one. (schemathesis's own pytest loader cannot take a fixture's app
under pytest 9, so each operation's strategy is run with hypothesis directly: the same generation and checks.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from portal.api import views as _declares_the_operations  # noqa: F401
from portal.api.spec import OPERATIONS
from tests.api.conftest import Api, make_token
from tests.conftest import create_tenant_admin, run_worker

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth]
EXAMPLES = 40


@pytest.fixture(scope="module")
def tenant(app) -> Api:
    """One tenant for the whole run, with a router, so that some generated ids name a row."""
    tenant_id, _ = create_tenant_admin(app)
    api = Api(app, tenant_id, make_token(app, tenant_id, "write"))
    api.add_router("seeded")
    return api


@pytest.fixture
def schema(app, monkeypatch, openvpn_server):
    monkeypatch.setitem(app.config, "PORTAL_API_RATE_LIMIT", 0)  # thousands of requests with one token
    return schemathesis.openapi.from_wsgi("/api/openapi.json", app, config=CONFIG)


def test_the_document_names_every_declared_operation(schema):
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert labels == {f"{operation.method} {operation.path}" for operation in OPERATIONS}


# A broken body may also be too large: 413 `payload_too_large` is a refusal too (the defaults lack it).
CONFIG = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": [
    "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}}})

POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
# Negative cases break a parameter or the body (the token is fixed: tests/api/test_auth.py breaks it); an
# operation that takes neither (health, subnet info) has none.
CASES = [(operation.method, operation.path, mode) for operation in OPERATIONS for mode in (POSITIVE, NEGATIVE)
         if mode == POSITIVE or operation.query or operation.body or operation.path_parameters]


@pytest.mark.parametrize("method, path, mode", CASES)
def test_generated_requests_get_documented_answers_and_no_5xx(schema, tenant: Api, method, path, mode):
    operation = schema[path][method]
    token = {"Authorization": f"Bearer {tenant.secret}"}

    @given(case=operation.as_strategy(generation_mode=mode, headers=token))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case):
        case.call_and_validate(headers=token, checks=CHECKS)

    run()


def test_the_jobs_it_woke_run_cleanly(app, openvpn_server):
    run_worker(app)
