"""The OpenVPN server-side scripts (portal/openvpn/scripts) against a real OpenVPN server and real clients.

The scripts run as the portal runs them: over SSH (portal.ssh) into the server namespace of tests/lab/openvpn.py,
bootstrap as `bash -c SCRIPT ovpn-bootstrap ARGS` with ovpn-client.sh on stdin, then the installed
BASE/bin/ovpn-client. One bootstrapped server per module; every test uses its own client names.

Needs root, iproute2, openvpn, easy-rsa, openssh-server and ping: skips elsewhere (fails under
PORTAL_E2E=required).
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from portal import ssh
from portal.ssh import CommandResult, SshSession
from tests.conftest import ROOT, require
from tests.lab import alive
from tests.lab.openvpn import OpenVpnLab, client_config, easyrsa_path, lab_missing

pytestmark = pytest.mark.system
SCRIPTS = ROOT / "portal" / "openvpn" / "scripts"
SETTINGS = ["10.8.0.0", "255.255.255.0", "1194", "udp", "7505"]
TUNNEL_SERVER = "10.8.0.1"
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MATERIAL = re.compile(
    r"# serial: (?P<serial>[0-9A-F]+)\n# not-after: (?P<not_after>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\n"
    r"<ca>\n(?P<ca>-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----)\n</ca>\n"
    r"<cert>\n(?P<cert>-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+-----END CERTIFICATE-----)\n</cert>\n"
    r"<key>\n(?P<key>-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+-----END PRIVATE KEY-----)\n</key>\n"
    r"<tls-crypt>\n(?P<tc>-----BEGIN OpenVPN Static key V1-----\n[0-9a-f\n]+-----END OpenVPN Static key V1-----)\n"
    r"</tls-crypt>\n")


@dataclass
class Server:
    lab: OpenVpnLab
    base: Path
    session: SshSession
    first_bootstrap: CommandResult

    def client(self, *args: str) -> CommandResult:
        return self.session.run([str(self.base / "bin" / "ovpn-client"), *args])

    def bootstrap(self, *settings: str, base: str | None = None, script: str | None = None) -> CommandResult:
        return bootstrap(self.session, base or str(self.base), *(settings or SETTINGS), script=script)

    def ovpn(self, material: str) -> str:
        return client_config(material, self.lab.server_address, 1194, "udp")

    def crl_serials(self) -> list[str]:
        text = openssl("crl", "-in", self.base / "crl.pem", "-noout", "-text")
        return re.findall(r"Serial Number: ([0-9A-F]+)", text)

    def index_lines(self, name: str) -> list[list[str]]:
        lines = (self.base / "pki" / "index.txt").read_text().splitlines()
        return [fields for fields in (line.split("\t") for line in lines) if fields[5] == f"/CN={name}"]

    def status(self) -> dict[str, list[str]]:
        result = self.client("status")
        assert result.exit_status == 0, result.stderr
        rows = [line.split("\t") for line in result.stdout.splitlines()]
        assert all(len(row) == 7 and row[0] == "client" for row in rows), result.stdout
        return {row[1]: row for row in rows}


def bootstrap(session: SshSession, *args: str, script: str | None = None) -> CommandResult:
    return session.run(["bash", "-c", (SCRIPTS / "ovpn-bootstrap.sh").read_text(), "ovpn-bootstrap", *args],
                       stdin=script if script is not None else (SCRIPTS / "ovpn-client.sh").read_text(), timeout=60)


def openssl(*args: object, input: str | None = None) -> str:
    return subprocess.run(["openssl", *map(str, args)], input=input, capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture(scope="module")
def server():
    require(lab_missing() is None, lab_missing() or "")
    with OpenVpnLab(clients=1) as lab:
        base = lab.base_dir()
        with ssh.connect(lab.ssh_target(), connect_timeout=5, command_timeout=30) as session:
            first = bootstrap(session, str(base), *SETTINGS)
            assert first.exit_status == 0, first.stderr
            lab.start_openvpn(base)
            yield Server(lab, base, session, first)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


# --- bootstrap ----------------------------------------------------------------------------------------------


def test_bootstrap_creates_the_server_and_a_second_run_changes_nothing(server):
    base = server.base
    assert server.first_bootstrap.stdout.splitlines() == [
        f"created {base}",
        f"created the PKI and the CA portal-ca in {base}/pki",
        "issued the server certificate",
        f"created the tls-crypt key {base}/tc.key",
        f"installed the CRL {base}/crl.pem",
        f"wrote {base}/server.conf",
        f"installed {base}/bin/ovpn-client",
    ]
    assert "PRIVATE KEY" not in server.first_bootstrap.stderr
    conf = (base / "server.conf").read_text().splitlines()
    for line in ["dev tun", "proto udp", "port 1194", "topology subnet", "server 10.8.0.0 255.255.255.0", "dh none",
                 f"ca {base}/pki/ca.crt", f"cert {base}/pki/issued/server.crt", f"key {base}/pki/private/server.key",
                 f"tls-crypt {base}/tc.key", f"crl-verify {base}/crl.pem", "keepalive 10 60",
                 f"status {base}/status.log 1", "status-version 3", "management 127.0.0.1 7505", "persist-key",
                 "persist-tun", "verb 3"]:
        assert line in conf
    assert "CN = portal-ca" in openssl("x509", "-in", base / "pki/ca.crt", "-noout", "-subject")
    server_cert = openssl("x509", "-in", base / "pki/issued/server.crt", "-noout", "-text")
    assert "ASN1 OID: prime256v1" in server_cert and "TLS Web Server Authentication" in server_cert
    assert (base / "bin/ovpn-client").read_text() == (SCRIPTS / "ovpn-client.sh").read_text()
    assert mode(base / "bin/ovpn-client") == 0o755 and mode(base / "crl.pem") == 0o644
    assert mode(base / "tc.key") == 0o600 and mode(base / "pki") == 0o700 and mode(base) == 0o755

    again = server.bootstrap()
    assert (again.exit_status, again.stdout) == (0, "unchanged\n"), again.stderr


def test_bootstrap_repairs_what_differs_and_only_that(server):
    base = server.base
    changed = server.bootstrap("10.8.0.0", "255.255.255.0", "1195", "tcp", "7505")
    assert changed.stdout == f"rewrote {base}/server.conf (it differed from the requested settings)\n"
    assert "proto tcp\nport 1195\n" in (base / "server.conf").read_text()
    assert server.bootstrap().stdout == f"rewrote {base}/server.conf (it differed from the requested settings)\n"

    older_script = (SCRIPTS / "ovpn-client.sh").read_text() + "# an older version\n"
    assert server.bootstrap(script=older_script).stdout == f"updated {base}/bin/ovpn-client\n"
    assert server.bootstrap().stdout == f"updated {base}/bin/ovpn-client\n"

    (base / "crl.pem").unlink()
    assert server.bootstrap().stdout == f"installed the CRL {base}/crl.pem\n"
    assert server.bootstrap().stdout == "unchanged\n"


@pytest.mark.parametrize("args", [
    ["relative/path", *SETTINGS],
    ["/tmp/a b", *SETTINGS],
    ["/tmp/../etc/openvpn", *SETTINGS],
    ["/tmp/$(touch MARKER)", *SETTINGS],
    ["BASE", "10.8.0.256", "255.255.255.0", "1194", "udp", "7505"],
    ["BASE", "10.8.0.0", "255.0.255.0", "1194", "udp", "7505"],
    ["BASE", "10.8.0.1", "255.255.255.0", "1194", "udp", "7505"],
    ["BASE", "10.8.0.0", "255.255.255.0", "0", "udp", "7505"],
    ["BASE", "10.8.0.0", "255.255.255.0", "1194", "udp", "65536"],
    ["BASE", "10.8.0.0", "255.255.255.0", "01194", "udp", "7505"],
    ["BASE", "10.8.0.0", "255.255.255.0", "1194", "icmp", "7505"],
    ["BASE", "10.8.0.0", "255.255.255.0", "1194", "udp"],
], ids=["relative", "space", "dotdot", "substitution", "octet", "mask", "host-bits", "port0", "port-big",
        "leading-zero", "proto", "missing"])
def test_bootstrap_rejects_bad_arguments_and_creates_nothing(server, args):
    target, marker = server.lab.base_dir("rejected"), server.lab.base_dir("executed")
    args = [arg.replace("BASE", str(target)).replace("MARKER", str(marker)) for arg in args]
    result = bootstrap(server.session, *args)
    assert result.exit_status == 2, result.stderr
    assert result.stdout == "" and result.stderr.startswith("ovpn-bootstrap: ")
    assert not target.exists() and not marker.exists()


# --- create -------------------------------------------------------------------------------------------------


def test_create_prints_the_metadata_and_the_four_blocks_and_twice_the_same(server):
    first = server.client("create", "alice.example-1")
    assert first.exit_status == 0, first.stderr
    match = MATERIAL.fullmatch(first.stdout)
    assert match, first.stdout
    assert "PRIVATE KEY" not in first.stderr and "alice.example-1" in first.stderr

    cert = match["cert"] + "\n"
    assert openssl("x509", "-noout", "-serial", input=cert).strip() == f"serial={match['serial']}"
    end = openssl("x509", "-noout", "-enddate", input=cert).strip().removeprefix("notAfter=")
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(end, "%b %d %H:%M:%S %Y GMT")) == match["not_after"]
    text = openssl("x509", "-noout", "-text", input=cert)
    assert "CN = alice.example-1" in text and "TLS Web Client Authentication" in text
    assert "ASN1 OID: prime256v1" in text
    assert openssl("x509", "-noout", "-pubkey", input=cert) == openssl("pkey", "-pubout", input=match["key"] + "\n")
    assert match["ca"] + "\n" == openssl("x509", "-in", server.base / "pki/ca.crt")
    assert match["serial"] in [fields[3] for fields in server.index_lines("alice.example-1")]

    second = server.client("create", "alice.example-1")
    assert (second.exit_status, second.stdout) == (0, first.stdout)
    assert len(server.index_lines("alice.example-1")) == 1


def test_concurrent_creates_of_one_name_issue_one_certificate(server):
    results: list[CommandResult] = []

    def create() -> None:
        with ssh.connect(server.lab.ssh_target(), connect_timeout=5, command_timeout=30) as session:
            results.append(session.run([str(server.base / "bin/ovpn-client"), "create", "dave"]))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [result.exit_status for result in results] == [0] * 4
    assert len({result.stdout for result in results}) == 1
    assert len(server.index_lines("dave")) == 1


def test_create_waits_for_the_pki_lock(server):
    holder = server.lab.server.popen(["flock", server.base / ".lock", "sleep", "1.5"])
    try:
        time.sleep(0.3)
        started = time.monotonic()
        result = server.client("create", "erin")
        waited = time.monotonic() - started
    finally:
        holder.wait(10)
    assert result.exit_status == 0, result.stderr
    assert waited >= 0.9, f"create did not wait for the lock ({waited:.2f} s)"


# --- connect, status, revoke ----------------------------------------------------------------------------------


def test_a_client_connects_pings_the_server_and_shows_in_status(server):
    material = server.client("create", "frank").stdout
    connection = server.lab.connect(server.ovpn(material))
    try:
        assert server.lab.ping(TUNNEL_SERVER, count=2)
        before = server.status()["frank"]
        assert server.lab.ping(TUNNEL_SERVER, count=3)
        _, name, real, virtual, received, sent, since = server.status()["frank"]
        assert name == "frank"
        assert real.rsplit(":", 1)[0] == server.lab.clients[0].address
        assert virtual.startswith("10.8.0.") and virtual != TUNNEL_SERVER
        assert int(received) > int(before[4]) > 0 and int(sent) > int(before[5]) > 0
        assert abs(int(since) - time.time()) < 60
    finally:
        connection.stop()


def test_revoke_kills_the_live_session_and_the_server_refuses_the_client(server):
    material = server.client("create", "grace").stdout
    serial = MATERIAL.fullmatch(material)["serial"]
    ovpn = server.ovpn(material)
    connection = server.lab.connect(ovpn)
    try:
        assert server.lab.ping(TUNNEL_SERVER)
        assert "grace" in server.status()

        revoked = server.client("revoke", "grace")
        assert (revoked.exit_status, revoked.stdout) == (0, "revoked\n"), revoked.stderr
        assert "kill 192.0.2.10:" in revoked.stderr and "SUCCESS" in revoked.stderr
        deadline = time.monotonic() + 5
        while "grace" in server.status() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "grace" not in server.status()
        assert not server.lab.ping(TUNNEL_SERVER, timeout=1)
        assert server.crl_serials().count(serial) == 1
        assert mode(server.base / "crl.pem") == 0o644

        assert_refused(server, ovpn, "grace")

        again = server.client("revoke", "grace")
        assert (again.exit_status, again.stdout) == (0, "already revoked\n"), again.stderr
        assert server.crl_serials().count(serial) == 1
        recreate = server.client("create", "grace")
        assert (recreate.exit_status, recreate.stdout) == (3, "")
        assert "grace is revoked" in recreate.stderr
    finally:
        connection.stop()


def assert_refused(server: Server, ovpn: str, name: str) -> None:
    """A new connection attempt with `ovpn` is refused by the server (the client itself only retries)."""
    offset = len(server.lab.openvpn.log())
    attempt = server.lab.connect(ovpn, wait=False)
    try:
        server.lab.openvpn.wait_for(rf"VERIFY ERROR: depth=0, error=certificate revoked: CN={re.escape(name)},",
                                    timeout=10, after=offset)
        assert "Initialization Sequence Completed" not in attempt.log()
    finally:
        attempt.stop()


def test_revoke_of_a_name_never_issued_says_absent(server):
    crl = (server.base / "crl.pem").read_bytes()
    result = server.client("revoke", "nobody-here")
    assert (result.exit_status, result.stdout) == (0, "absent\n"), result.stderr
    assert (server.base / "crl.pem").read_bytes() == crl and server.index_lines("nobody-here") == []


def test_a_crash_between_easyrsa_revoke_and_gen_crl_is_repaired_by_revoke(server):
    material = server.client("create", "heidi").stdout
    serial = MATERIAL.fullmatch(material)["serial"]
    ovpn = server.ovpn(material)
    connection = server.lab.connect(ovpn)
    try:
        crashed = server.session.run([
            "env", "EASYRSA_BATCH=1", "EASYRSA_NO_VARS=1", f"EASYRSA_PKI={server.base}/pki", easyrsa_path(),
            "revoke", "heidi"])
        assert crashed.exit_status == 0, crashed.stderr
        assert [fields[0] for fields in server.index_lines("heidi")] == ["R"]
        assert serial not in server.crl_serials()  # the crash: revoked in the index, not in the installed CRL
        assert "heidi" in server.status()

        repaired = server.client("revoke", "heidi")
        assert (repaired.exit_status, repaired.stdout) == (0, "already revoked\n"), repaired.stderr
        assert server.crl_serials().count(serial) == 1
        assert [fields[0] for fields in server.index_lines("heidi")] == ["R"]
        assert "heidi" not in server.status()
        assert_refused(server, ovpn, "heidi")
        assert server.bootstrap().stdout == "unchanged\n"  # the CRL now matches the index
    finally:
        connection.stop()


def test_revoke_fails_when_the_management_interface_does_not_answer_and_a_rerun_finishes(server):
    material = server.client("create", "mallory").stdout
    serial = MATERIAL.fullmatch(material)["serial"]
    # OpenVPN serves one management client at a time: this one keeps it busy past the script's 5 s wait
    holder = server.lab.server.popen(["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7505 && sleep 6.5"])
    try:
        time.sleep(0.3)
        busy = server.client("revoke", "mallory")
    finally:
        holder.wait(15)
    assert (busy.exit_status, busy.stdout) == (1, ""), busy.stderr
    assert "did not answer" in busy.stderr and "run revoke again" in busy.stderr
    assert server.crl_serials().count(serial) == 1  # revoked and in the CRL; only the kill is unsure
    again = server.client("revoke", "mallory")
    assert (again.exit_status, again.stdout) == (0, "already revoked\n"), again.stderr
    assert "no live session of mallory" in again.stderr


# --- arguments ----------------------------------------------------------------------------------------------


def snapshot(base: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(base)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(base.rglob("*")) if path.name != "status.log"}


UNSAFE_NAMES = ["a;reboot", "../x", "$(id)", "", "a" * 65, "-rf", "a b", "x\ny", "`id`", ".hidden", "a/b",
                "ä", "server"]


def test_unsafe_names_are_rejected_by_the_script_and_change_nothing(server):
    marker = server.lab.server.dir / "executed"
    names = [*UNSAFE_NAMES, f"$(touch {marker})", f"a;touch {marker}", f"`touch {marker}`"]
    assert not any(NAME_RULE.fullmatch(name) for name in names if name != "server")
    before = snapshot(server.base)
    for name in names:
        for verb in ("create", "revoke"):
            result = server.client(verb, name)
            assert (result.exit_status, result.stdout) == (2, ""), (verb, name, result.stderr)
            assert result.stderr.startswith("ovpn-client: ") and "usage" not in result.stderr, result.stderr
    assert snapshot(server.base) == before
    assert not marker.exists()
    assert server.client("create", "a" * 64).exit_status == 0  # the longest allowed name


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["create"], ["create", "a", "b"], ["revoke"], ["status", "x"]])
def test_usage_errors_exit_2(server, args):
    result = server.client(*args)
    assert (result.exit_status, result.stdout) == (2, "") and "usage:" in result.stderr


# --- without the management interface -------------------------------------------------------------------------


def test_status_reads_a_fresh_status_file_when_the_management_interface_is_down(server):
    status_file = server.base / "status.log"
    assert server.client("create", "frank").exit_status == 0  # revoked below, with the server down
    server.lab.stop_openvpn()
    try:
        os.utime(status_file, (time.time() - 120, time.time() - 120))
        assert server.client("status").stdout == ""  # a stopped server's stale file lists nobody
        status_file.write_text(
            "TITLE\tOpenVPN 2.6\nTIME\tnow\t1700000000\n"
            "HEADER\tCLIENT_LIST\tCommon Name\tReal Address\tVirtual Address\tVirtual IPv6 Address\tBytes Received"
            "\tBytes Sent\tConnected Since\tConnected Since (time_t)\tUsername\tClient ID\tPeer ID\t"
            "Data Channel Cipher\n"
            "CLIENT_LIST\tivan\t192.0.2.10:40000\t10.8.0.9\t\t123\t456\t2023-11-14 22:13:20\t1700000000\tUNDEF"
            "\t7\t0\tAES-256-GCM\n"
            "CLIENT_LIST\tUNDEF\t192.0.2.11:40001\t\t\t10\t20\t2023-11-14 22:13:20\t1700000000\tUNDEF\t8\t1\tnone\n"
            "ROUTING_TABLE\t10.8.0.9\tivan\t192.0.2.10:40000\t2023-11-14 22:13:20\t1700000000\n"
            "GLOBAL_STATS\tMax bcast/mcast queue length\t0\nEND\n")
        # a client still in its handshake (no name yet, no virtual address) is not listed
        assert server.client("status").stdout == "client\tivan\t192.0.2.10:40000\t10.8.0.9\t123\t456\t1700000000\n"

        result = server.client("revoke", "frank")  # no server running: revoking is still complete
        assert (result.exit_status, result.stdout) == (0, "revoked\n")
        assert "no management interface listening" in result.stderr
    finally:
        server.lab.start_openvpn(server.base)


# --- the lab itself -----------------------------------------------------------------------------------------


def test_a_second_lab_runs_beside_the_first_and_leaves_nothing_behind(server):
    lab = OpenVpnLab(clients=1)
    try:
        assert lab.server.sshd.host != server.lab.server.sshd.host  # its own management /30
        base = lab.base_dir()
        with ssh.connect(lab.ssh_target(), connect_timeout=5, command_timeout=30) as session:
            assert bootstrap(session, str(base), *SETTINGS).exit_status == 0
            material = session.run([str(base / "bin/ovpn-client"), "create", "judy"], check=True).stdout
        lab.start_openvpn(base)
        lab.connect(client_config(material, lab.server_address))
        assert lab.ping()
        namespaces = [namespace.name for namespace in lab.namespaces]
        pids = [pid for namespace in lab.namespaces for pid in namespace.pids()]
        assert len(pids) >= 3  # sshd and two openvpn
    finally:
        lab.close()
    lab.close()
    assert not set(namespaces) & set(os.listdir("/run/netns"))
    assert not [pid for pid in pids if alive(pid)]
    assert not base.exists()
    # the first lab is untouched
    assert server.lab.ping(server.lab.server_address) and server.lab.openvpn.alive()
    assert server.client("status").exit_status == 0
