"""An OpenVPN lab in network namespaces, on top of tests/lab/__init__.py: a server with its own sshd, and clients.

Importable without pytest (the system tests and demos use it). Needs root and real software (iproute2, openvpn,
easy-rsa, openssl, openssh-server, ping, /dev/net/tun); `lab_missing()` says what is absent.

    root namespace --- management veth, a /30 of 203.0.113.0/24 ---> server: mgmt0; sshd on port 22
    switch namespace, bridge br0 --- veths ---> server eth0 192.0.2.1/24, client i eth0 192.0.2.(10+i)/24

It is `tests.lab.Lab` with the hub as the OpenVPN server and the routers as OpenVPN clients: the portal reaches
the server's sshd over the management link (`ssh_target()`), clients reach the server at `server_address`.
The server's `openvpn` and every client's `openvpn` run in the foreground under Popen, so the lab owns their
pids and stops them by pid; names carry the creating process's pid, so labs of parallel runs do not collide and
`tests.lab.cleanup_stale()` removes what a crashed run left.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from portal.ssh import SshTarget
from tests.lab import HUB_ADDRESS, Lab, Namespace, _reap, _wait_for, alive, ssh_fields, terminate, which
from tests.lab import lab_missing as namespace_lab_missing

EASYRSA_FALLBACK = "/usr/share/easy-rsa/easyrsa"
TOOLS = {"ip": "iproute2", "ss": "iproute2", "openvpn": "openvpn", "openssl": "openssl", "sshd": "openssh-server",
         "ssh-keygen": "openssh-client", "ping": "iputils-ping", "bash": "bash", "flock": "util-linux"}
CONNECTED = "Initialization Sequence Completed"


def easyrsa_path() -> str | None:
    """Where easy-rsa is, as the server-side script looks for it."""
    found = which("easyrsa")
    if found:
        return found
    return EASYRSA_FALLBACK if os.access(EASYRSA_FALLBACK, os.X_OK) else None


def lab_missing() -> str | None:
    """Why the OpenVPN lab cannot run here, or None."""
    if os.geteuid() == 0 and easyrsa_path() is None:
        return "easyrsa not installed (apt-get install easy-rsa)"
    return namespace_lab_missing(TOOLS, needs_tun="openvpn")


def client_config(material: str, remote: str, port: int = 1194, proto: str = "udp") -> str:
    """A client .ovpn from what `ovpn-client create` prints (its "# ..." metadata lines are comments to openvpn)."""
    return "\n".join([
        "client", "dev tun", f"proto {proto}", f"remote {remote} {port}", "nobind", "remote-cert-tls server",
        "verify-x509-name server name", "connect-retry 1", "verb 3", material.rstrip("\n"), "",
    ])


def management_port(base: Path) -> int:
    match = re.search(r"^management 127\.0\.0\.1 (\d+)$", (Path(base) / "server.conf").read_text(), re.M)
    if match is None:
        raise ValueError(f"{base}/server.conf has no management line")
    return int(match[1])


class OpenVpnProcess:
    """An openvpn run in the foreground in a namespace, its output in a log file; stopped by pid."""

    def __init__(self, namespace: Namespace, argv: list[str], log: Path):
        self.namespace, self.log_path = namespace, log
        self._offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as output:
            self.process = namespace.popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What this run wrote so far (not earlier runs' lines in the same file)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._offset)
            return log.read().decode(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None and alive(self.process.pid)

    def wait_for(self, pattern: str, timeout: float = 10, after: int = 0) -> re.Match:
        """The first match of the regex `pattern` in the log at or after character `after`; RuntimeError on timeout."""
        found: list[re.Match] = []

        def seen() -> bool:
            match = re.compile(pattern).search(self.log(), after)
            if match:
                found.append(match)
            return match is not None

        _wait_for(seen, timeout, f"waiting for {pattern!r} from openvpn in {self.namespace.name}", self.process,
                  self.log_path)
        return found[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            terminate(lambda: [self.process.pid] if alive(self.process.pid) else [])
        _reap(self.process)


class ClientConnection(OpenVpnProcess):
    """A client's openvpn. After a server-side kill it keeps running (it retries, and a revoked client is
    refused at every attempt without exiting): ask the server, not `alive()`, whether it is connected."""


class OpenVpnLab(Lab):
    """A server namespace (sshd; openvpn once `start_openvpn` runs) and `clients` client namespaces.

    `server` is the server's namespace, `clients` the client namespaces; `server_address` is what clients put
    in `remote`, `ssh_target()` what the portal connects to, `base_dir()` a fresh directory for a server's files.
    """

    def __init__(self, clients: int = 1):
        self.openvpn: OpenVpnProcess | None = None
        self.connections: list[ClientConnection] = []
        super().__init__(routers=clients)
        self.server = self.hub
        self.server_address = HUB_ADDRESS

    @property
    def clients(self) -> list[Namespace]:
        return self.routers

    def add_client(self) -> Namespace:
        """One more client namespace on the underlay, at 192.0.2.(10 + its index)."""
        return self.add_router()

    def ssh_target(self, username: str = "root") -> SshTarget:
        return self.server.sshd.target(username)

    def base_dir(self, name: str = "openvpn") -> Path:
        """A path (not created: bootstrap does that) for a server's BASE, made of characters the script accepts."""
        return self.server.dir / name

    def server_settings(self, name: str):
        """What a platform admin would enter to add this lab's server (BASE at `base_dir()`) to the portal."""
        from portal.openvpn.servers import ServerSettings

        return ServerSettings(name=name, remote_host=self.server_address, base_dir=str(self.base_dir()),
                              **ssh_fields(self.ssh_target()))

    # --- the server -----------------------------------------------------------------------------------------

    def start_openvpn(self, base: str | Path, timeout: float = 10) -> OpenVpnProcess:
        """`openvpn --config BASE/server.conf` in the server namespace, once it is up and its management port
        listens."""
        self.stop_openvpn()
        base = Path(base)
        port = management_port(base)
        process = OpenVpnProcess(self.server, [which("openvpn"), "--cd", str(base), "--config",
                                                str(base / "server.conf")], self.server.dir / "openvpn-server.log")
        self.openvpn = process
        process.wait_for(CONNECTED, timeout)
        _wait_for(lambda: self.management_listening(port), timeout, "the management interface", process.process,
                  process.log_path)
        return process

    def management_listening(self, port: int) -> bool:
        done = self.server.run(["ss", "-Hltn", f"sport = :{port}"], check=False)
        return done.returncode == 0 and "LISTEN" in done.stdout

    def stop_openvpn(self) -> None:
        if self.openvpn is not None:
            self.openvpn.stop()
            self.openvpn = None

    def server_log(self) -> str:
        """Everything the server's openvpn wrote in this lab (all its runs)."""
        path = self.server.dir / "openvpn-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- clients --------------------------------------------------------------------------------------------

    def connect(self, ovpn_text: str, timeout: float = 10, client: Namespace | None = None,
                wait: bool = True) -> ClientConnection:
        """Run `openvpn --config FILE` in a client namespace (the first by default); with `wait`, return once it
        logs "Initialization Sequence Completed" (RuntimeError, with its log, if not within `timeout`)."""
        namespace = client or self.clients[0]
        index = len(self.connections)
        config = namespace.conf_dir / f"client{index}.ovpn"
        with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
            file.write(ovpn_text)
        connection = ClientConnection(namespace, [which("openvpn"), "--config", str(config)],
                                      namespace.dir / f"openvpn-client{index}.log")
        self.connections.append(connection)
        if wait:
            try:
                connection.wait_for(CONNECTED, timeout)
            except RuntimeError:
                connection.stop()
                raise
        return connection

    def ping(self, address: str = "10.8.0.1", client: Namespace | None = None, count: int = 1,
             timeout: float = 2) -> bool:
        """Ping from a client namespace (the first by default), by default the server's tunnel address."""
        return (client or self.clients[0]).ping(address, count=count, timeout=timeout)

    def close(self) -> None:
        for connection in self.connections:
            connection.stop()
        self.stop_openvpn()
        super().close()
