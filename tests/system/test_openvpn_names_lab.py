"""System test: two tenants' OpenVPN clients of one name on one real OpenVPN server (issue 12, section 3).

Each gets a certificate of its own common name from the real easy-rsa and scripts, both connect at once, and
revoking one cuts off that one only. Uses the lab and server of test_openvpn_lab.py; needs root
(`PORTAL_E2E=required` makes a missing prerequisite a failure instead of a skip).
"""

from __future__ import annotations

import pytest

from tests.conftest import login, post, run_worker
from tests.system import test_openvpn_lab
from tests.system.test_openvpn_lab import (
    TUNNEL_SERVER,
    add_and_provision,
    assert_refused,
    listed_by_server,
    load,
    wait_until,
)

pytestmark = pytest.mark.system
lab, server = test_openvpn_lab.lab, test_openvpn_lab.server  # the fixtures: a lab, its server in the portal


def test_two_tenants_clients_named_alike_get_certificates_of_their_own_and_revoke_alone(
        app, admin_client, other_tenant_admin, lab, server):
    other = app.test_client()
    login(other, other_tenant_admin[1])
    mine = add_and_provision(app, admin_client, "laptop-1")
    theirs = add_and_provision(app, other, "laptop-1")  # not "already in use": names are per tenant
    assert mine.server_id == theirs.server_id == server
    assert mine.common_name != theirs.common_name and "laptop-1" in mine.common_name
    index = (lab.base_dir() / "pki" / "index.txt").read_text()
    assert f"/CN={mine.common_name}\n" in index and f"/CN={theirs.common_name}\n" in index
    assert "/CN=laptop-1\n" not in index

    profiles = {}
    for client, row in ((admin_client, mine), (other, theirs)):
        response = client.get(f"/openvpn/clients/{row.id}/download.ovpn")
        assert response.headers["Content-Disposition"] == 'attachment; filename="laptop-1.ovpn"'
        profiles[row.id] = response.get_data(as_text=True)
    second = lab.add_client()
    lab.connect(profiles[mine.id])
    lab.connect(profiles[theirs.id], client=second)
    assert lab.ping(TUNNEL_SERVER) and lab.ping(TUNNEL_SERVER, client=second)
    assert listed_by_server(app, mine.id) and load(app, theirs.id).connected  # sessions matched by common name

    post(admin_client, f"/openvpn/clients/{mine.id}/revoke", token_page="/openvpn/clients")
    run_worker(app)
    assert load(app, mine.id).bundle is None
    assert wait_until(lambda: not listed_by_server(app, mine.id), 5)
    assert load(app, theirs.id).connected and lab.ping(TUNNEL_SERVER, client=second)
    assert not lab.ping(TUNNEL_SERVER, timeout=1)
    lab.connections[0].stop()
    assert_refused(lab, profiles[mine.id], mine.common_name)
