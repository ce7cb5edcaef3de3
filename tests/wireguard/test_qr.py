"""The router page's QR code of the `.conf`, for the WireGuard phone apps (issue 12, section 3).

It holds the private key: it is fetched on a click (GET /configurations/<id>/qr), for an active configuration,
by the tenant's own admins only, not cached, and audited as a download of format `qr`. The SVG is read back
into its modules and compared with the QR code of the downloaded `.conf` (no QR decoder is installed here).
"""

from __future__ import annotations

import re

import pytest
import segno
from sqlalchemy import select

from portal.audit.models import AuditEvent
from portal.extensions import db
from tests.conftest import add_router, configuration_of, login, post, router_id_from, run_worker
from tests.web.test_impersonation import staff_client, start_visit

QR_LINK = "Show QR code for the WireGuard app"


def svg_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (column, row) of a segno SVG, quiet zone included: its `qrline` path draws each row's
    runs of dark modules as horizontal strokes (`M x y`, `m dx dy`, `h length`) at row + 0.5."""
    path = re.search(r'<path class="qrline"[^>]* d="([^"]+)"', svg)
    assert path, svg[:200]
    dark, x, y = set(), 0.0, 0.0
    for command, args in re.findall(r"([Mmh])([-\d. ]+)", path.group(1)):
        numbers = [float(number) for number in args.split()]
        if command == "M":
            x, y = numbers
        elif command == "m":
            x, y = x + numbers[0], y + numbers[1]
        else:
            dark.update((int(x) + step, int(y)) for step in range(int(numbers[0])))
            x += numbers[0]
    return dark


def qr_modules(text: str, error: str = "l", border: int = 4) -> set[tuple[int, int]]:
    code = segno.make_qr(text, error=error)
    return {(column + border, row + border) for row, line in enumerate(code.matrix)
            for column, module in enumerate(line) if module}


def qr_events(app, configuration_id: int) -> list[dict]:
    with app.app_context():
        return [details for details in db.session.scalars(select(AuditEvent.details).where(
            AuditEvent.target_type == "vpn_configurations", AuditEvent.target_id == configuration_id,
            AuditEvent.action == "configuration.downloaded")) if details.get("format") == "qr"]


@pytest.fixture
def active(app, admin_client):
    """(router id, configuration id) of an active configuration of the admin's tenant."""
    router_id = router_id_from(add_router(admin_client, "Branch office with a long name 7"))
    run_worker(app)
    configuration = configuration_of(app, router_id)
    assert configuration.status == "active"
    return router_id, configuration.id


def test_the_qr_code_holds_the_conf_as_downloaded_and_is_audited(app, admin_client, active):
    router_id, configuration_id = active
    page = admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert QR_LINK in page and f"/configurations/{configuration_id}/qr" in page
    assert "qrline" not in page and "PrivateKey" not in page  # not rendered with the page
    assert qr_events(app, configuration_id) == []

    response = admin_client.get(f"/configurations/{configuration_id}/qr")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    assert "<svg" in body and "<html" in body  # without htmx: a page of its own, with a way back
    conf = admin_client.get(f"/configurations/{configuration_id}/download.conf")
    filename = re.search(r'filename="([^"]+)"', conf.headers["Content-Disposition"]).group(1)
    assert svg_modules(body) == qr_modules(conf.get_data(as_text=True))  # the very file, key and all
    assert f"<code>{filename.removesuffix('.conf')}</code>" in body  # the tunnel name the app should get
    assert qr_events(app, configuration_id) == [{"format": "qr"}]


def test_htmx_gets_the_fragment_that_replaces_the_button(app, admin_client, active):
    _, configuration_id = active
    response = admin_client.get(f"/configurations/{configuration_id}/qr", headers={"HX-Request": "true"})
    body = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert body.lstrip().startswith('<div id="configuration-qr"') and "<html" not in body and "<svg" in body


def test_only_an_active_configuration_has_a_qr_code(app, admin_client):
    router_id = router_id_from(add_router(admin_client, "Not yet"))
    configuration_id = configuration_of(app, router_id).id  # pending: no worker ran
    assert QR_LINK not in admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert admin_client.get(f"/configurations/{configuration_id}/qr").status_code == 409
    run_worker(app)
    post(admin_client, f"/routers/{router_id}/revoke")
    run_worker(app)
    assert configuration_of(app, router_id).status == "revoked"
    assert QR_LINK not in admin_client.get(f"/routers/{router_id}").get_data(as_text=True)
    assert admin_client.get(f"/configurations/{configuration_id}/qr").status_code == 409
    assert qr_events(app, configuration_id) == []


@pytest.mark.parametrize("changes", [None, "Customer asked us to re-key"], ids=["read-only", "with-changes"])
def test_support_staff_visiting_the_tenant_are_refused(app, admin_client, active, support_user, changes):
    router_id, configuration_id = active
    staff = staff_client(app, support_user)
    assert start_visit(app, staff, support_user, admin_client.tenant_id, changes).status_code == 302
    assert QR_LINK not in staff.get(f"/routers/{router_id}").get_data(as_text=True)
    response = staff.get(f"/configurations/{configuration_id}/qr")
    assert response.status_code == 403 and "<svg" not in response.get_data(as_text=True)
    assert qr_events(app, configuration_id) == []


def test_another_tenant_gets_404(app, active, other_tenant_admin):
    _, configuration_id = active
    intruder = app.test_client()
    login(intruder, other_tenant_admin[1])
    response = intruder.get(f"/configurations/{configuration_id}/qr")
    assert response.status_code == 404 and "<svg" not in response.get_data(as_text=True)
    assert qr_events(app, configuration_id) == []


def test_the_svg_reader_above_reads_what_segno_draws() -> None:
    """The check of the first test is only as good as `svg_modules`: it must tell codes apart."""
    from portal.qr import qr_svg

    assert svg_modules(qr_svg("hello", "t", error="l")) == qr_modules("hello")
    assert svg_modules(qr_svg("hello", "t", error="l")) != qr_modules("hellp")
