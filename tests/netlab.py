"""A WireGuard lab in network namespaces: a hub with its own sshd, and routers on a bridge (192.0.2.0/24).

Importable without pytest (the system tests and `make demo` use it). Needs root, iproute2, wireguard-go,
wireguard-tools, openssh-server, nftables and ping; `lab_missing()` says what is absent. Every
namespace gets its own /run/wireguard (wireguard-go's sockets live there), bind-mounted in the mount
namespace that `ip netns exec` makes, so `wg` always talks to the right wireguard-go. Teardown kills
every process in each namespace by PID, then deletes namespaces, bridge and files.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from portal.ssh import SshTarget

UNDERLAY_PREFIX = "192.0.2"
HUB_ADDRESS = f"{UNDERLAY_PREFIX}.1"
HOST_MANAGEMENT_ADDRESS = "198.51.100.254"
HUB_MANAGEMENT_ADDRESS = "198.51.100.1"
FIRST_ROUTER_HOST = 10
TOOLS = ("ip", "wireguard-go", "wg", "wg-quick", "ssh-keygen", "nft", "ping", "bash")
SSHD = "/usr/sbin/sshd"
_counter = itertools.count()


def lab_missing() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install wireguard-go wireguard-tools nftables iputils-ping)"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install openssh-server)"
    if not os.path.exists("/dev/net/tun"):
        return "/dev/net/tun is missing (wireguard-go needs it)"
    return None


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=kwargs.pop("check", True), capture_output=True, text=True, **kwargs)


class Namespace:
    """A network namespace with its own /run/wireguard."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.dir = workdir / name
        (self.dir / "wireguard").mkdir(parents=True)
        Path("/run/wireguard").mkdir(parents=True, exist_ok=True)
        run(["ip", "netns", "add", name])
        self.run(["ip", "link", "set", "lo", "up"])

    def wrap(self, argv: list[str]) -> list[str]:
        mount = f"mount --bind {self.dir / 'wireguard'} /run/wireguard && exec \"$@\""
        return ["ip", "netns", "exec", self.name, "sh", "-c", mount, "sh", *argv]

    def run(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        return run(self.wrap(argv), **kwargs)

    def popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.wrap(argv), **kwargs)

    def ping(self, address: str, count: int = 1, timeout: float = 2) -> bool:
        done = self.run(["ping", "-c", str(count), "-W", str(timeout), "-i", "0.2", address], check=False)
        return done.returncode == 0

    def wg_quick_up(self, conf: str, interface: str = "wg0") -> None:
        path = self.dir / f"{interface}.conf"
        path.touch(mode=0o600)
        path.write_text(conf)
        self.run(["env", "WG_QUICK_USERSPACE_IMPLEMENTATION=wireguard-go", "wg-quick", "up", str(path)])

    def wg_quick_down(self, interface: str = "wg0") -> None:
        self.run(["wg-quick", "down", str(self.dir / f"{interface}.conf")], check=False)

    def pids(self) -> list[int]:
        done = run(["ip", "netns", "pids", self.name], check=False)
        return [int(pid) for pid in done.stdout.split()]

    def close(self) -> None:
        kill_all(self.pids)
        run(["ip", "netns", "del", self.name], check=False)


def kill_all(pids) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2
        while pids() and time.monotonic() < deadline:
            time.sleep(0.05)


class Sshd:
    """A private OpenSSH server inside a namespace, with a generated host key and client key."""

    def __init__(self, namespace: Namespace, address: str, port: int = 22):
        self.namespace, self.address, self.port = namespace, address, port
        self.dir = namespace.dir / "sshd"
        self.dir.mkdir()
        self.host_key_file, self.client_key_file = self.dir / "host_key", self.dir / "client_key"
        self._keygen(self.host_key_file)
        self._keygen(self.client_key_file)
        (self.dir / "authorized_keys").write_text((self.dir / "client_key.pub").read_text())
        (self.dir / "sshd_config").write_text("\n".join([
            f"Port {port}", f"ListenAddress {address}", f"HostKey {self.host_key_file}",
            f"PidFile {self.dir / 'sshd.pid'}", f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "",
        ]))
        Path("/run/sshd").mkdir(exist_ok=True)
        run([SSHD, "-t", "-f", str(self.dir / "sshd_config")])
        self.process: subprocess.Popen | None = None
        self.start()

    @staticmethod
    def _keygen(path: Path) -> None:
        path.unlink(missing_ok=True)
        Path(f"{path}.pub").unlink(missing_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)])

    def start(self) -> None:
        self.log = open(self.dir / "sshd.log", "a")  # noqa: SIM115 - lives as long as the server
        # A clean home for root, as on a real hub: this machine's /root/.bashrc (pyenv) costs 150 ms per command.
        home = self.dir / "home"
        home.mkdir(exist_ok=True)
        clean_home = f'mount --bind {home} /root && exec "$@"'
        self.process = self.namespace.popen(["sh", "-c", clean_home, "sh", SSHD, "-D", "-e", "-f",
                                             str(self.dir / "sshd_config")], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {(self.dir / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        done = self.namespace.run(["ss", "-Htln", f"sport = :{self.port}"], check=False)
        return bool(done.stdout.strip())

    def stop(self) -> None:
        """The server and every connection it serves: the hub is unreachable over SSH."""
        if self.process is None:
            return
        kill_all(lambda: [pid for pid in self.namespace.pids() if _is_our_sshd(pid, self.dir)])
        self.process.wait(5)
        self.process = None
        self.log.close()

    def replace_host_key(self) -> None:
        self.stop()
        self._keygen(self.host_key_file)
        self.start()

    def log_text(self) -> str:
        return (self.dir / "sshd.log").read_text()

    @property
    def host_key(self) -> str:
        return " ".join(Path(f"{self.host_key_file}.pub").read_text().split()[:2])

    def target(self) -> SshTarget:
        return SshTarget(host=self.address, port=self.port, username="root", host_key=self.host_key,
                         private_key=self.client_key_file.read_text())


def wait_for_tcp(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _is_our_sshd(pid: int, directory: Path) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "sshd" in command and (str(directory) in command or "sshd:" in command)


class Lab:
    """A hub namespace and router namespaces. The routers' underlay (192.0.2.0/24) is a bridge inside the hub
    namespace, so it never meets the host's own networks; the host reaches the hub's sshd over a separate
    management link (198.51.100.0/24, also a documentation range)."""

    def __init__(self, routers: int = 0):
        self.tag = f"l{os.getpid() % 100000}{next(_counter)}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"portal-lab-{self.tag}-"))
        self.namespaces: list[Namespace] = []
        self.routers: list[Namespace] = []
        self.sshd: Sshd | None = None
        self.management_link = f"{self.tag}m"
        try:
            self.hub = self._new_namespace("hub")
            self.hub.run(["ip", "link", "add", "br0", "type", "bridge"])
            self.hub.run(["ip", "addr", "add", f"{HUB_ADDRESS}/24", "dev", "br0"])
            self.hub.run(["ip", "link", "set", "br0", "up"])
            self.hub_endpoint = HUB_ADDRESS
            self._management_link()
            self.sshd = Sshd(self.hub, HUB_MANAGEMENT_ADDRESS)
            wait_for_tcp(HUB_MANAGEMENT_ADDRESS, self.sshd.port)
            for _ in range(routers):
                self.add_router()
        except BaseException:
            self.close()
            raise

    def _new_namespace(self, role: str) -> Namespace:
        namespace = Namespace(f"{self.tag}{role}", self.workdir)
        self.namespaces.append(namespace)
        return namespace

    def _management_link(self) -> None:
        run(["ip", "link", "add", self.management_link, "type", "veth", "peer", "name", "mgmt0",
             "netns", self.hub.name])
        run(["ip", "addr", "add", f"{HOST_MANAGEMENT_ADDRESS}/24", "dev", self.management_link])
        run(["ip", "link", "set", self.management_link, "up"])
        self.hub.run(["ip", "addr", "add", f"{HUB_MANAGEMENT_ADDRESS}/24", "dev", "mgmt0"])
        self.hub.run(["ip", "link", "set", "mgmt0", "up"])

    def add_router(self) -> Namespace:
        index = len(self.routers)
        router = self._new_namespace(f"r{index}")
        port = f"r{index}"
        self.hub.run(["ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", router.name])
        self.hub.run(["ip", "link", "set", port, "master", "br0", "up"])
        router.run(["ip", "addr", "add", f"{UNDERLAY_PREFIX}.{FIRST_ROUTER_HOST + index}/24", "dev", "eth0"])
        router.run(["ip", "link", "set", "eth0", "up"])
        self.routers.append(router)
        return router

    def close(self) -> None:
        if getattr(self, "sshd", None) is not None:
            self.sshd.stop()
        for namespace in reversed(self.namespaces):
            namespace.close()
        run(["ip", "link", "del", self.management_link], check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
