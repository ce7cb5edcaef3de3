"""System test: a `.conf` downloaded for a router with a long name comes up with `wg-quick up ./<file name>`, under
the name it was downloaded with, in a router namespace of the WireGuard lab, and reaches the hub (issue 12,
section 3). Uses the lab and hub of test_hub_lab.py; needs root (`PORTAL_E2E=required` makes a missing
prerequisite a failure instead of a skip).
"""

from __future__ import annotations

import os
import re

import pytest

from portal.ipam.pool import hub_address
from tests.system import test_hub_lab
from tests.system.test_hub_lab import add_and_provision, hub_peers, ping_eventually, place

pytestmark = pytest.mark.system
lab, hub = test_hub_lab.lab, test_hub_lab.hub  # the fixtures: a lab, its hub bootstrapped by the portal

LONG_NAME = "Branch office 7 - second floor, rack 12".replace(",", "")  # 38 characters; 11 used to be too many
WIREGUARD_GO = {"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"}


def test_a_conf_downloaded_for_a_long_router_name_comes_up_with_wg_quick_as_downloaded(app, admin_client, lab, hub):
    network = place(app, admin_client.tenant_id, hub)
    configuration = add_and_provision(app, admin_client, LONG_NAME)
    assert configuration.status == "active"
    response = admin_client.get(f"/configurations/{configuration.id}/download.conf")
    assert response.status_code == 200
    filename = re.fullmatch(r'attachment; filename="([^"/]+)"', response.headers["Content-Disposition"]).group(1)
    interface = filename.removesuffix(".conf")
    assert filename.endswith(".conf") and len(interface) <= 15 and interface.startswith("wg-branch-")

    router = lab.routers[0]
    path = router.conf_dir / filename  # saved as downloaded, private as wg-quick wants it
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as saved:
        saved.write(response.get_data())

    def wg_quick(*args: str):
        return router.run(["sh", "-c", 'cd "$1" && shift && exec wg-quick "$@"', "sh", router.conf_dir, *args],
                          env=WIREGUARD_GO, check=False)

    stripped = wg_quick("strip", f"./{filename}")  # wg-quick checks the interface name before anything else
    assert stripped.returncode == 0 and "PrivateKey" in stripped.stdout, stripped.stderr
    up = wg_quick("up", f"./{filename}")
    assert up.returncode == 0, up.stderr
    assert f"[#] ip link add {interface} type wireguard" in up.stderr  # the interface is named after the file
    assert interface in router.run(["wg", "show", "interfaces"]).stdout.split()
    assert ping_eventually(router, str(hub_address(network)))
    assert hub_peers(lab)[configuration.public_key].endpoint is not None  # the hub saw it come from the router

    down = wg_quick("down", f"./{filename}")
    assert down.returncode == 0, down.stderr
    assert interface not in router.run(["wg", "show", "interfaces"]).stdout.split()
