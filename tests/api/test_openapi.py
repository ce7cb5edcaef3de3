"""The OpenAPI document: valid OpenAPI 3.1, generated from the code (every route under /api is a declared
operation, every declared operation is in it), served without a token, and rendered by the reference page."""

from __future__ import annotations

from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from portal.api.errors import CODES
from portal.api.spec import OPERATIONS

NOT_OPERATIONS = {"api.openapi_document", "api.docs", "api.index"}  # the document, its page, and /api itself


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document, cls=OpenAPIV31SpecValidator)


def test_every_api_route_is_a_declared_operation_in_the_document(app, client):
    document = client.get("/api/openapi.json").get_json()
    declared = {(operation.method, operation.path) for operation in OPERATIONS}
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented == declared
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api.") and rule.endpoint not in NOT_OPERATIONS:
            path = rule.rule.replace("<id:", "{").replace(">", "}")
            routed |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed == declared


def test_every_error_status_is_documented_with_its_codes(client):
    document = client.get("/api/openapi.json").get_json()
    vpn = document["paths"]["/api/vpn"]["post"]
    assert vpn["security"] == [{"bearer": []}] and vpn["x-scope"] == "write"
    assert set(vpn["responses"]) >= {"202", "400", "401", "403", "404", "409", "415", "422", "429"}
    assert "`insufficient_scope`" in vpn["responses"]["403"]["description"]
    assert vpn["responses"]["202"]["headers"]["Location"]["required"] is True
    assert document["paths"]["/api/health"]["get"]["security"] == []
    for code in CODES:
        assert f"`{code}`" in document["info"]["description"]


def test_the_reference_page_renders_every_operation_from_the_document(client):
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for operation in OPERATIONS:
        assert f'id="{operation.view.__name__}"' in html
        assert f"{operation.method} {operation.path}" in html
    assert 'id="schema-Configuration"' in html and "<script" not in html.split("<main")[1]
    assert "http://" not in page.headers.get("Content-Security-Policy", "")
