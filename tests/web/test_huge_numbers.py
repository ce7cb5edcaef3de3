"""Ids and page numbers past what the database holds are "not there" or "past the end", never a 500."""

from __future__ import annotations

import pytest

HUGE = "9223372036854775808"  # 2**63
LARGEST = "2147483648"  # 2**31: past what PostgreSQL ids hold


@pytest.mark.parametrize("path", [
    f"/routers/{HUGE}", f"/routers/{HUGE}/traffic", f"/configurations/{HUGE}/download.rsc",
    f"/openvpn/clients/{HUGE}", f"/openvpn/clients/{HUGE}/download.ovpn", f"/routers/{LARGEST}",
    f"/routers/{2**31 - 1}", f"/openvpn/clients/{2**31 - 1}",
    f"/configurations/{'9' * 40}/download.conf",
])
def test_an_id_too_large_for_the_database_is_not_found(admin_client, path):
    assert admin_client.get(path).status_code == 404


@pytest.mark.parametrize("path", ["/routers", "/openvpn/clients", "/audit"])
@pytest.mark.parametrize("page", [LARGEST, HUGE, "-5", "0", "x"])
def test_a_page_number_past_the_end_is_an_empty_page(admin_client, path, page):
    assert admin_client.get(f"{path}?page={page}").status_code == 200


def test_platform_admins_get_a_404_for_a_huge_tenant_id(app, platform_admin):
    from tests.conftest import login

    client = app.test_client()
    login(client, platform_admin)
    assert client.get(f"/admin/tenants/{HUGE}/audit").status_code == 404
    assert client.get(f"/admin/tenants/{LARGEST}/audit?page={HUGE}").status_code == 404
