"""A WireGuard lab in network namespaces: a hub with its own sshd, and routers, on a private underlay.

Importable without pytest: the system tests and `make demo` use it. Needs root and real software
(iproute2, wireguard-go, wireguard-tools, openssh-server, nftables, ping); `lab_missing()` says what is absent.

    root namespace --- management veth, a /30 of 203.0.113.0/24 ---> hub: mgmt0; sshd on port 22
    switch namespace, bridge br0 --- veths ---> hub eth0 192.0.2.1/24, router i eth0 192.0.2.(10+i)/24

The underlay bridge is not in the root namespace on purpose: a host may already use 192.0.2.0/24 for its own
uplink (the machine this was written on has 192.0.2.2/24 on eth0 and its gateway at 192.0.2.1), and a second
192.0.2.0/24 route there would send the portal's SSH to the real gateway. The portal reaches the hub's sshd over
a management /30 picked among free ones, so labs in parallel processes do not collide.

Every namespace has its own /run/wireguard (wireguard-go's control sockets live there), bind-mounted in the
private mount namespace `ip netns exec` creates. Every command in a namespace, sshd included, runs through that
wrapper, so `wg` (also in an SSH session on the hub) always finds the wireguard-go of its own namespace.
Names carry the creating process's pid (`pl<pid><kind><n>`): `cleanup_stale()` removes what a crashed run left.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import ipaddress
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from portal.devserver import descendants
from portal.ssh import SshTarget

PREFIX = "pl"  # every namespace, root-namespace link and temp dir of a lab: pl<pid><kind><counter>
NAME = re.compile(rf"^{PREFIX}(\d+)([a-z])(\d+)$")
DIR_PREFIX = "portal-lab-"
UNDERLAY = ipaddress.ip_network("192.0.2.0/24")
HUB_ADDRESS = "192.0.2.1"
FIRST_ROUTER = 10
MAX_ROUTERS = 244  # 192.0.2.10 .. 192.0.2.253
MANAGEMENT_RANGE = ipaddress.ip_network("203.0.113.0/24")  # TEST-NET-3, cut into /30s
LOCK_FILE = Path("/run/portal-lab.lock")
RUN_WIREGUARD = Path("/run/wireguard")
SSHD_PRIVSEP_DIR = Path("/run/sshd")
TOOLS = {"ip": "iproute2", "wireguard-go": "wireguard-go", "wg": "wireguard-tools", "wg-quick": "wireguard-tools",
         "sshd": "openssh-server", "ssh-keygen": "openssh-client", "nft": "nftables", "ping": "iputils-ping",
         "bash": "bash"}
SBIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ids = itertools.count()


def _name(kind: str) -> str:
    """A name unique on this machine and at most 15 characters (an interface name's limit)."""
    return f"{PREFIX}{os.getpid()}{kind}{next(_ids)}"


def which(tool: str) -> str | None:
    """The absolute path of a tool, also in sbin directories a non-root PATH lacks."""
    return shutil.which(tool) or shutil.which(tool, path=SBIN_PATH)


# --- what the lab needs -----------------------------------------------------------------------------------


def sshd_missing() -> str | None:
    """Why a private sshd cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("sshd", "ssh-keygen"):
        if which(tool) is None:
            return f"{tool} not installed (apt-get install {TOOLS[tool]})"
    return None


def lab_missing(tools: dict[str, str] = TOOLS, needs_tun: str = "wireguard-go") -> str | None:
    """Why the lab cannot run here, or None: root, `tools` (name: Debian package), /dev/net/tun, namespaces."""
    if os.geteuid() != 0:
        return "needs root"
    for tool, package in tools.items():
        if which(tool) is None:
            return f"{tool} not installed (apt-get install {package})"
    if not Path("/dev/net/tun").exists():
        return f"/dev/net/tun is missing ({needs_tun} needs it)"
    return _namespaces_missing()


@functools.cache
def _namespaces_missing() -> str | None:
    namespace = None
    try:
        namespace = Namespace("probe")
        namespace.run(["true"])
    except (OSError, subprocess.SubprocessError) as error:
        return f"ip netns does not work here: {error}"
    finally:
        if namespace is not None:
            namespace.close()
    return None


# --- commands and processes -------------------------------------------------------------------------------


class LabCommandFailed(subprocess.CalledProcessError):
    """A lab command failed; unlike CalledProcessError, the message shows its error output."""

    def __str__(self) -> str:
        detail = (self.stderr or self.stdout or "").strip()[-800:] or "no output"
        return f"`{shlex.join(self.cmd)}` exited {self.returncode}: {detail}"


def run(argv: Sequence[str], input: str | None = None, check: bool = True, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command, capture text output; `env` adds to (does not replace) this process's environment."""
    argv = [str(arg) for arg in argv]
    done = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env} if env else None)
    if check and done.returncode != 0:
        raise LabCommandFailed(done.returncode, argv, done.stdout, done.stderr)
    return done


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def terminate(pids: Callable[[], Sequence[int]], grace: float = 2.0) -> None:
    """SIGTERM every pid `pids()` lists, SIGKILL what is still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        current = [pid for pid in pids() if pid != os.getpid()]
        for pid in current:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while any(alive(pid) for pid in current) and time.monotonic() < deadline:
            time.sleep(0.02)


def _reap(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _netns_pids(name: str) -> list[int]:
    """The pids whose network namespace is /run/netns/NAME (what `ip netns pids NAME` prints), zombies excluded."""
    try:
        target = os.stat(f"/run/netns/{name}")
    except FileNotFoundError:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found = os.stat(entry / "ns" / "net")
            except OSError:
                continue
            if (found.st_dev, found.st_ino) == (target.st_dev, target.st_ino):
                pids.append(int(entry.name))
    return pids


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        exited = process is not None and process.poll() is not None
        if exited or time.monotonic() > deadline:
            detail = log.read_text(errors="replace")[-1500:] if log and log.exists() else ""
            raise RuntimeError(f"{what} {'exited' if exited else 'timed out'}: {detail}")
        time.sleep(0.01)


# --- namespaces -------------------------------------------------------------------------------------------


class Namespace:
    """A network namespace with its own /run/wireguard; `role` ("hub", "r0", ...) is for people."""

    def __init__(self, role: str = "ns"):
        self.name = _name("n")
        self.role = role
        self.address: str | None = None  # its underlay address, when a Lab plugged it in
        self.sshd: Sshd | None = None
        self._processes: list[subprocess.Popen] = []
        self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{self.name}-"))
        self.wireguard_dir = self.dir / "wireguard"
        self.conf_dir = self.dir / "conf"
        try:
            self.wireguard_dir.mkdir()
            self.conf_dir.mkdir(mode=0o700)
            RUN_WIREGUARD.mkdir(parents=True, exist_ok=True)
            run(["ip", "netns", "add", self.name])
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"Namespace({self.role} {self.name})"

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """argv to run inside: this namespace's network, and its own directory mounted on /run/wireguard."""
        script = f'mount --bind {shlex.quote(str(self.wireguard_dir))} /run/wireguard && exec "$@"'
        return ["ip", "netns", "exec", self.name, "sh", "-c", script, "sh", *map(str, argv)]

    def run(self, argv: Sequence[str], input: str | None = None, check: bool = True,
            env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        return run(self.wrap(argv), input=input, check=check, env=env, timeout=timeout)

    def popen(self, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """A long-running process inside; `close()` stops and reaps it."""
        process = subprocess.Popen(self.wrap(argv), **kwargs)
        self._processes.append(process)
        return process

    def ip(self, *args: str) -> subprocess.CompletedProcess:
        """`ip -n NAME ...`: plumbing that needs neither the mount wrapper nor a shell."""
        return run(["ip", "-n", self.name, *args])

    def ping(self, address: str, count: int = 1, timeout: float = 2) -> bool:
        done = self.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", f"{timeout:g}", address],
                        check=False, timeout=count * 0.2 + timeout + 10)
        return done.returncode == 0

    def conf_path(self, interface: str = "wg0") -> Path:
        return self.conf_dir / f"{interface}.conf"

    def wg_quick_up(self, conf_text: str, interface: str = "wg0") -> None:
        """Write INTERFACE.conf (0600, wg-quick names the interface after the file) and bring it up."""
        path = self.conf_path(interface)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as conf:
            conf.write(conf_text)
        os.chmod(path, 0o600)
        self.run(["wg-quick", "up", path], env={"WG_QUICK_USERSPACE_IMPLEMENTATION": "wireguard-go"})

    def wg_quick_down(self, interface: str = "wg0", check: bool = True) -> None:
        self.run(["wg-quick", "down", self.conf_path(interface)], check=check)

    def pids(self) -> list[int]:
        return _netns_pids(self.name)

    def exists(self) -> bool:
        return Path(f"/run/netns/{self.name}").exists()

    def close(self) -> None:
        """Stop every process inside (by pid), delete the namespace and its files. Safe to call twice."""
        if self.sshd is not None:
            self.sshd.stop()
        if self.exists():
            terminate(self.pids)
            run(["ip", "netns", "del", self.name], check=False)
        for process in self._processes:
            _reap(process)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_wireguard_go(namespace: Namespace, interface: str = "wg0", timeout: float = 5) -> subprocess.Popen:
    """wireguard-go in the foreground inside `namespace` (we own the pid), once its control socket is there.

    Terminating it removes the interface and the socket.
    """
    log = namespace.dir / f"wireguard-go-{interface}.log"
    with open(log, "ab") as output:
        process = namespace.popen(["wireguard-go", "-f", interface], stdin=subprocess.DEVNULL, stdout=output,
                                  stderr=subprocess.STDOUT)
    sock = namespace.wireguard_dir / f"{interface}.sock"
    _wait_for(sock.exists, timeout, f"wireguard-go {interface} in {namespace.name}", process, log)
    return process


# --- sshd -------------------------------------------------------------------------------------------------


class _PortBusy(RuntimeError):
    pass


class Sshd:
    """A private OpenSSH server: its own config, generated ed25519 host key and client key, run in the foreground.

    On the host it listens on `listen` (127.0.0.1) and a free port; in a namespace it runs through the
    namespace's wrapper (its sessions see that namespace's wireguard sockets) on port 22. `host` is the
    address clients use, when `listen` is a wildcard.
    """

    def __init__(self, namespace: Namespace | None = None, listen: str = "127.0.0.1", port: int | None = None,
                 host: str | None = None):
        self.namespace, self.listen, self.host = namespace, listen, host or listen
        self._pick_port = port is None and namespace is None
        self.port = port or (22 if namespace is not None else _free_port(listen))
        self.process: subprocess.Popen | None = None
        if namespace is not None:
            self.dir = namespace.dir / "sshd"
            self.dir.mkdir()
        else:
            self.dir = Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{_name('s')}-"))
        self.config, self.log_path = self.dir / "sshd_config", self.dir / "sshd.log"
        self.host_key_file, self.client_key_file = self.dir / "host_key", self.dir / "client_key"
        self.authorized_keys = self.dir / "authorized_keys"
        try:
            _keygen(self.host_key_file, "portal-lab host")
            _keygen(self.client_key_file, "portal-lab client")
            self.authorized_keys.write_text(Path(f"{self.client_key_file}.pub").read_text())
            self._write_config()
            self.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Sshd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _write_config(self) -> None:
        self.config.write_text("\n".join([
            f"Port {self.port}",
            f"ListenAddress {self.listen}",
            f"HostKey {self.host_key_file}",
            f"PidFile {self.dir / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the files live under /tmp, whose mode StrictModes rejects
            "PrintMotd no",
            "MaxStartups 100",  # the default (10:30:100) drops connections when many workers connect at once
            "",
        ]))
        _make_privilege_separation_dir()
        run([which("sshd"), "-t", "-f", self.config])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (again: same keys, same port) and wait until it listens."""
        if self.running:
            return
        _make_privilege_separation_dir()
        for attempt in range(3 if self._pick_port else 1):
            try:
                self._launch()
                return
            except _PortBusy:
                if attempt == 2 or not self._pick_port:
                    raise
                self.port = _free_port(self.listen)  # someone took the port between probe and bind
                self._write_config()

    def _launch(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        argv = [which("sshd"), "-D", "-e", "-f", str(self.config)]
        if self.namespace is not None:
            # A clean home for root, as on a real hub: this machine's /root/.bashrc (pyenv) costs 150 ms a command.
            home = self.dir / "home"
            home.mkdir(exist_ok=True)
            argv = ["sh", "-c", f'mount --bind {shlex.quote(str(home))} /root && exec "$@"', "sh", *argv]
        with open(self.log_path, "ab") as log:
            options = {"stdin": subprocess.DEVNULL, "stdout": log, "stderr": subprocess.STDOUT}
            self.process = (self.namespace.popen(argv, **options) if self.namespace is not None
                            else subprocess.Popen(argv, **options))

        def listening() -> bool:
            return "Server listening on" in self._log_since(offset)

        try:
            _wait_for(listening, 10, "sshd", self.process, self.log_path)
        except RuntimeError:
            self.stop()
            if "Address already in use" in self._log_since(offset):
                raise _PortBusy(f"port {self.port} is in use") from None
            raise

    def _log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def stop(self) -> None:
        """Stop the server and every session it serves (the host is then unreachable over SSH)."""
        process, self.process = self.process, None
        if process is None:
            return
        pids = [process.pid, *descendants(process.pid)]
        terminate(lambda: [pid for pid in pids if alive(pid)])
        _reap(process)

    def replace_host_key(self) -> None:
        """A new host key (as after a reinstall), and a restart so clients see it."""
        self.stop()
        _keygen(self.host_key_file, "portal-lab host")
        self.start()

    def authorize(self, public_key_line: str) -> None:
        """Let one more client key log in (sshd reads the file at every login)."""
        with open(self.authorized_keys, "a") as keys:
            keys.write(public_key_line.strip() + "\n")

    @property
    def host_key(self) -> str:
        """The server's public key as "ssh-ed25519 AAAA..." (what the portal pins)."""
        return " ".join(Path(f"{self.host_key_file}.pub").read_text().split()[:2])

    @property
    def client_private_key(self) -> str:
        return self.client_key_file.read_text()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def target(self, username: str = "root") -> SshTarget:
        return SshTarget(host=self.host, port=self.port, username=username, host_key=self.host_key,
                         private_key=self.client_private_key)

    def close(self) -> None:
        self.stop()
        if self.namespace is None:
            shutil.rmtree(self.dir, ignore_errors=True)


def _make_privilege_separation_dir() -> None:
    """sshd refuses to check or run its config without /run/sshd, which Debian's package makes only when its
    service starts (no systemd here), and /run is emptied at boot."""
    SSHD_PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)


def _keygen(path: Path, comment: str) -> None:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    run([which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path])


# --- the lab ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    """Serialises picking root-namespace addresses between processes (released even if we crash)."""
    fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _free_management_network() -> ipaddress.IPv4Network:
    """The first /30 of MANAGEMENT_RANGE that no address or route of the root namespace touches."""
    taken = []
    for route in json.loads(run(["ip", "-4", "-j", "route", "show", "table", "all"]).stdout):
        if route.get("dst", "default") != "default":
            taken.append(ipaddress.ip_network(route["dst"], strict=False))
    for link in json.loads(run(["ip", "-4", "-j", "addr", "show"]).stdout):
        for address in link.get("addr_info", []):
            taken.append(ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", strict=False))
    for network in MANAGEMENT_RANGE.subnets(new_prefix=30):
        if not any(network.overlaps(other) for other in taken):
            return network
    raise RuntimeError(f"no free /30 left in {MANAGEMENT_RANGE} for a lab's management link")


def ssh_fields(target: SshTarget) -> dict[str, str | int]:
    """An SSH target as the ssh_* settings the portal keeps for a hub or an OpenVPN server."""
    return {"ssh_host": target.host, "ssh_port": target.port, "ssh_user": target.username,
            "ssh_host_key": target.host_key, "ssh_private_key": target.private_key}


class Lab:
    """A hub namespace (sshd, no WireGuard yet: the portal's bootstrap makes it) and `routers` router namespaces.

    `hub_endpoint` is the hub's underlay address (what routers put in Endpoint); the portal reaches the hub's
    sshd at `hub.sshd.target()`, over the management link.
    """

    def __init__(self, routers: int = 0):
        if not 0 <= routers <= MAX_ROUTERS:
            raise ValueError(f"a lab has 0 to {MAX_ROUTERS} routers")
        self.hub_endpoint = HUB_ADDRESS
        self.routers: list[Namespace] = []
        self.namespaces: list[Namespace] = []
        self.management_link: str | None = None
        self.host_address: str | None = None  # the root namespace's end of the management link
        self.hub_ssh_host: str | None = None  # the hub's end, where its sshd is reached
        try:
            cleanup_stale()
            self.switch = self._namespace("switch")
            self.switch.ip("link", "add", "br0", "type", "bridge")
            self.switch.ip("link", "set", "br0", "up")
            self.hub = self._namespace("hub")
            self._plug(self.hub, HUB_ADDRESS)
            self._management_link()
            self.hub.sshd = Sshd(self.hub, listen="0.0.0.0", port=22, host=self.hub_ssh_host)
            for _ in range(routers):
                self.add_router()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _namespace(self, role: str) -> Namespace:
        namespace = Namespace(role)
        self.namespaces.append(namespace)
        return namespace

    def _plug(self, namespace: Namespace, address: str) -> None:
        """Connect the namespace's eth0 to the switch, with `address`/24."""
        port = f"p{len(self.namespaces)}"
        self.switch.ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace.name)
        self.switch.ip("link", "set", port, "master", "br0", "up")
        namespace.ip("addr", "add", f"{address}/{UNDERLAY.prefixlen}", "dev", "eth0")
        namespace.ip("link", "set", "eth0", "up")
        namespace.address = address

    def _management_link(self) -> None:
        link = _name("m")
        with _machine_lock():
            network = _free_management_network()
            host, hub = (str(address) for address in network.hosts())
            run(["ip", "link", "add", link, "type", "veth", "peer", "name", "mgmt0", "netns", self.hub.name])
            self.management_link = link
            run(["ip", "addr", "add", f"{host}/30", "dev", link])
        run(["ip", "link", "set", link, "up"])
        self.hub.ip("addr", "add", f"{hub}/30", "dev", "mgmt0")
        self.hub.ip("link", "set", "mgmt0", "up")
        self.host_address, self.hub_ssh_host = host, hub

    def hub_settings(self, name: str):
        """What a platform admin would enter to add this lab's hub to the portal."""
        from portal.wireguard.hubs import HubSettings

        return HubSettings(name=name, endpoint_host=self.hub_endpoint, **ssh_fields(self.hub.sshd.target()))

    def add_router(self) -> Namespace:
        """One more router namespace on the underlay, at 192.0.2.(10 + its index)."""
        index = len(self.routers)
        if index >= MAX_ROUTERS:
            raise ValueError(f"a lab has at most {MAX_ROUTERS} routers")
        router = self._namespace(f"r{index}")
        self._plug(router, str(UNDERLAY[FIRST_ROUTER + index]))
        self.routers.append(router)
        return router

    def close(self) -> None:
        """Remove everything: processes (by pid), namespaces, links, files. Safe after a failed setup, and twice."""
        for namespace in reversed(self.namespaces):
            namespace.close()
        if self.management_link and Path(f"/sys/class/net/{self.management_link}").exists():
            run(["ip", "link", "del", self.management_link], check=False)


def cleanup_stale() -> list[str]:
    """Remove what labs of processes that no longer run left behind; the names removed."""
    removed = []
    netns_dir = Path("/run/netns")
    for name in sorted(os.listdir(netns_dir)) if netns_dir.is_dir() else []:
        if _is_stale(name):
            terminate(functools.partial(_netns_pids, name))
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    for link in json.loads(run(["ip", "-j", "link", "show"]).stdout):
        if _is_stale(link["ifname"]):
            run(["ip", "link", "del", link["ifname"]], check=False)
            removed.append(link["ifname"])
    for directory in Path(tempfile.gettempdir()).glob(f"{DIR_PREFIX}{PREFIX}*"):
        if _is_stale(directory.name.removeprefix(DIR_PREFIX).split("-")[0]):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(str(directory))
    return removed


def _is_stale(name: str) -> bool:
    match = NAME.match(name)
    return match is not None and not alive(int(match[1]))
