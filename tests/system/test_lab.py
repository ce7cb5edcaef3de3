"""The lab of tests/lab/ with real software: WireGuard (wireguard-go) between namespaces, the hub's sshd
reached with portal.ssh from the root namespace, and a teardown that leaves nothing behind, even after a crash.

Needs root, iproute2, wireguard-go, wireguard-tools, openssh-server, nftables and ping: skips elsewhere (fails
under PORTAL_E2E=required).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from portal import ssh
from portal.crypto import generate_keypair, generate_preshared_key
from tests.conftest import ROOT, require
from tests.lab import (
    SSHD_PRIVSEP_DIR,
    Lab,
    Namespace,
    Sshd,
    alive,
    cleanup_stale,
    lab_missing,
    start_wireguard_go,
)

pytestmark = pytest.mark.system
LISTEN_PORT = 51820
TIMEOUTS = {"connect_timeout": 5, "command_timeout": 10}


@pytest.fixture(scope="module", autouse=True)
def _lab_prerequisites():
    require(lab_missing() is None, lab_missing() or "")


def tunnel_address(index: int) -> str:
    return f"10.100.0.{2 + index}"


def router_conf(private_key: str, address: str, hub_public: str, preshared: str, endpoint: str) -> str:
    return (f"[Interface]\nPrivateKey = {private_key}\nAddress = {address}/24\n\n"
            f"[Peer]\nPublicKey = {hub_public}\nPresharedKey = {preshared}\nEndpoint = {endpoint}:{LISTEN_PORT}\n"
            "AllowedIPs = 10.100.0.0/24\nPersistentKeepalive = 25\n")


def start_hub(hub: Namespace) -> tuple[subprocess.Popen, str]:
    """wireguard-go on the hub at 10.100.0.1/24, its private key given on stdin; (process, public key)."""
    keys = generate_keypair()
    process = start_wireguard_go(hub, "wg0")
    hub.run(["wg", "set", "wg0", "private-key", "/dev/stdin", "listen-port", str(LISTEN_PORT)],
            input=keys.private + "\n")
    hub.ip("addr", "add", "10.100.0.1/24", "dev", "wg0")
    hub.ip("link", "set", "wg0", "up")
    return process, keys.public


def connect_router(lab: Lab, router: Namespace, index: int, hub_public: str) -> str:
    """A peer on the hub (keys on stdin, never argv) and wg-quick on the router; the router's public key."""
    keys, preshared = generate_keypair(), generate_preshared_key()
    lab.hub.run(["wg", "set", "wg0", "peer", keys.public, "preshared-key", "/dev/stdin",
                 "allowed-ips", f"{tunnel_address(index)}/32"], input=preshared + "\n")
    router.wg_quick_up(router_conf(keys.private, tunnel_address(index), hub_public, preshared, lab.hub_endpoint))
    return keys.public


def parse_dump(text: str) -> dict[str, list[str]]:
    """`wg show IF dump`: peers by public key (the first line is the interface itself)."""
    return {fields[0]: fields for fields in (line.split("\t") for line in text.splitlines()[1:])}


def test_routers_reach_the_hub_through_wireguard_and_the_portal_reaches_the_hubs_sshd():
    with Lab(routers=2) as lab:
        hub_process, hub_public = start_hub(lab.hub)
        router_keys = [connect_router(lab, router, index, hub_public) for index, router in enumerate(lab.routers)]
        for index, router in enumerate(lab.routers):
            assert router.ping("10.100.0.1", count=2), f"router {index} cannot ping the hub over the tunnel"
            assert lab.hub.ping(tunnel_address(index)), f"the hub cannot ping router {index} over the tunnel"
        # each namespace has its own wg0 control socket, the hub's and the routers' side by side
        assert all((ns.wireguard_dir / "wg0.sock").exists() for ns in (lab.hub, *lab.routers))

        with ssh.connect(lab.hub.sshd.target(), **TIMEOUTS) as session:  # from the root namespace
            assert session.run(["wg", "show", "interfaces"], check=True).stdout.split() == ["wg0"]
            peers = parse_dump(session.run(["wg", "show", "wg0", "dump"], check=True).stdout)
            assert set(peers) == set(router_keys)
            for index, key in enumerate(router_keys):
                endpoint, allowed, handshake = peers[key][2], peers[key][3], int(peers[key][4])
                assert endpoint.rsplit(":", 1)[0] == lab.routers[index].address  # the router's underlay address
                assert allowed == f"{tunnel_address(index)}/32" and handshake > 0
            assert "192.0.2.1/24" in session.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout

        lab.routers[1].wg_quick_down()  # also stops the router's wireguard-go
        assert "wg0" not in lab.routers[1].run(["ip", "-o", "link"]).stdout
        assert not lab.routers[1].ping("10.100.0.1", timeout=1)
        assert lab.routers[0].ping("10.100.0.1")

        hub_process.terminate()
        assert hub_process.wait(5) is not None
        assert not (lab.hub.wireguard_dir / "wg0.sock").exists()
        assert not lab.routers[0].ping("10.100.0.1", timeout=1)


def test_sshd_runs_on_a_machine_that_never_ran_sshd():
    """Debian makes /run/sshd only when its sshd service starts, and /run is emptied at boot: the lab makes it."""
    with contextlib.suppress(FileNotFoundError):
        SSHD_PRIVSEP_DIR.rmdir()
    with Sshd() as server, ssh.connect(server.target(), **TIMEOUTS) as session:
        assert session.run(["echo", "up"]).stdout.strip() == "up"


def test_teardown_leaves_no_namespace_link_file_or_process():
    lab = Lab(routers=1)
    try:
        start_hub(lab.hub)
        lab.routers[0].wg_quick_up(f"[Interface]\nPrivateKey = {generate_keypair().private}\nAddress = 10.100.0.2/24\n")
        session = ssh.connect(lab.hub.sshd.target(), **TIMEOUTS)
        # a process left running on the hub, no longer below sshd: only the namespace sweep finds it
        session.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 </dev/null &"], check=True)
        namespaces = [ns.name for ns in lab.namespaces]
        directories = [ns.dir for ns in lab.namespaces]
        pids = [pid for ns in lab.namespaces for pid in ns.pids()]
        assert len(pids) >= 5  # sshd, its session, sleep, two wireguard-go
    finally:
        started = time.monotonic()
        lab.close()
        elapsed = time.monotonic() - started
    lab.close()  # a second close is harmless
    assert elapsed < 5
    assert not set(namespaces) & set(os.listdir("/run/netns"))
    assert not Path(f"/sys/class/net/{lab.management_link}").exists()
    assert not any(directory.exists() for directory in directories)
    assert not [pid for pid in pids if alive(pid)]
    with pytest.raises(ssh.SshUnreachable):
        session.run(["true"])
    session.close()


def test_a_crashed_run_is_cleaned_up_by_the_next():
    script = ("import os, signal\n"
              "from tests.lab import Lab, start_wireguard_go\n"
              "lab = Lab(routers=1)\n"
              "start_wireguard_go(lab.hub)\n"
              "print(lab.management_link, *(ns.name for ns in lab.namespaces), *(ns.dir for ns in lab.namespaces))\n"
              "print(*(pid for ns in lab.namespaces for pid in ns.pids()), flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    crashed = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    names_line, pids_line = crashed.stdout.splitlines()
    link, *rest = names_line.split()
    namespaces, directories = rest[:len(rest) // 2], [Path(d) for d in rest[len(rest) // 2:]]
    pids = [int(pid) for pid in pids_line.split()]
    assert set(namespaces) <= set(os.listdir("/run/netns")) and Path(f"/sys/class/net/{link}").exists()
    assert all(alive(pid) for pid in pids)  # the orphans: sshd and wireguard-go

    removed = cleanup_stale()

    assert set(namespaces) <= set(removed)  # the management link goes with the hub namespace, or by name
    assert not set(namespaces) & set(os.listdir("/run/netns"))
    assert not Path(f"/sys/class/net/{link}").exists()
    assert not any(directory.exists() for directory in directories)
    assert not [pid for pid in pids if alive(pid)]


def test_two_labs_side_by_side_and_twenty_routers_come_up_quickly():
    started = time.monotonic()
    with Lab(routers=20) as big, Lab(routers=1) as small:
        setup = time.monotonic() - started
        assert big.hub_ssh_host != small.hub_ssh_host
        for lab in (big, small):
            with ssh.connect(lab.hub.sshd.target(), **TIMEOUTS) as session:
                assert "192.0.2.1" in session.run(["hostname", "-I"]).stdout.split()
        assert big.routers[19].address == "192.0.2.29" and big.routers[19].ping(big.hub_endpoint)
        assert big.add_router().ping(big.hub_endpoint)
    assert setup < 10, f"setup took {setup:.1f} s"
