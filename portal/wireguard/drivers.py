"""How the portal talks to a WireGuard hub.

Every operation is an "ensure": applying a peer that is already there, or removing one that is gone,
succeeds. Commands reach the hub through a runner: `ssh` (paramiko, pinned host key) or `local`
(subprocess, for a portal installed on the hub). Keys go to `wg` on stdin or through 0600 files, never
on a command line. Unreachable hubs raise `HubUnreachable` (a TransientError: the job retries).
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Sequence
from importlib.resources import files
from typing import Protocol

from flask import current_app

from portal import ssh
from portal.jobs import TransientError
from portal.ssh import CommandResult, SshTarget
from portal.wireguard.models import Hub
from portal.wireguard.wgtext import HubDump, Peer, batch_lines, check_interface, parse_dump

SCRIPTS = files("portal.wireguard") / "scripts"


class HubUnreachable(TransientError):
    pass


class HubCommandFailed(Exception):
    """The hub ran a command and it failed: not a reason to hammer it again at once."""


class Runner(Protocol):
    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult: ...


class LocalRunner:
    def __init__(self, timeout: float):
        self.timeout = timeout

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        command = " ".join(argv[:2])
        try:
            done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise HubUnreachable(f"`{command}` did not finish within {self.timeout:g} s") from None
        except OSError as error:
            raise HubCommandFailed(f"cannot run {argv[0]}: {error.strerror}") from None
        return CommandResult(command=command, exit_status=done.returncode, stdout=done.stdout, stderr=done.stderr)


class SshRunner:
    """Runs commands over one SSH connection per hub and worker process, reconnecting when it drops."""

    _sessions: dict[SshTarget, ssh.SshSession] = {}
    _guard = threading.Lock()

    def __init__(self, target: SshTarget, connect_timeout: float, command_timeout: float):
        self.target, self.connect_timeout, self.command_timeout = target, connect_timeout, command_timeout

    def run(self, argv: Sequence[str], stdin: str | None = None) -> CommandResult:
        with self._guard:
            session = self._sessions.pop(self.target, None)
        if session is not None:
            try:
                return self._run_and_keep(session, argv, stdin)
            except ssh.SshUnreachable:
                pass  # a stale connection (the hub or its sshd restarted): one fresh try; commands are ensures
        session = ssh.connect(self.target, connect_timeout=self.connect_timeout, command_timeout=self.command_timeout)
        return self._run_and_keep(session, argv, stdin)

    def _run_and_keep(self, session: ssh.SshSession, argv: Sequence[str], stdin: str | None) -> CommandResult:
        try:
            result = session.run(argv, stdin=stdin)
        except BaseException:
            session.close()
            raise
        with self._guard:
            kept = self._sessions.setdefault(self.target, session)
        if kept is not session:
            session.close()
        return result

    @classmethod
    def close_all(cls) -> None:
        with cls._guard:
            sessions, cls._sessions = list(cls._sessions.values()), {}
        for session in sessions:
            session.close()


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()


class HubDriver:
    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> HubDump | None:
        """Apply and remove peers in one go; the hub's state right after, where the driver can see it."""
        raise NotImplementedError

    def apply_peer(self, hub: Hub, peer: Peer) -> HubDump | None:
        return self.apply_peers(hub, apply=[peer])

    def remove_peer(self, hub: Hub, public_key: str) -> HubDump | None:
        return self.apply_peers(hub, remove=[public_key])


class WgDriver(HubDriver):
    """A Linux hub managed with `wg`, `ip` and `nft` through a runner."""

    def __init__(self, runner: Runner):
        self.runner = runner

    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> HubDump:
        result = self.runner.run(["bash", "-c", script("hub-peers.sh"), "hub-peers", check_interface(hub.interface)],
                                 stdin=batch_lines(list(apply), list(remove)))
        return parse_dump(checked(result, "hub-peers.sh").stdout)

    def dump(self, hub: Hub) -> HubDump:
        result = self.runner.run(["wg", "show", check_interface(hub.interface), "dump"])
        return parse_dump(checked(result, "wg show").stdout)

    def bootstrap(self, hub: Hub, wg_config: str, firewall: str, addresses: Sequence[str]) -> list[str]:
        """Bring the hub to the desired state; the lines say what changed ("unchanged" when nothing did)."""
        result = self.runner.run(["bash", "-c", script("hub-bootstrap.sh"), "hub-bootstrap",
                                  check_interface(hub.interface), firewall, *addresses], stdin=wg_config)
        return checked(result, "hub-bootstrap.sh").stdout.split("\n")[:-1]


def checked(result: CommandResult, label: str) -> CommandResult:
    """The result of a command that succeeded; else a HubCommandFailed naming `label` (never the script text)."""
    if result.exit_status != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no error output"]
        raise HubCommandFailed(f"`{label}` exited {result.exit_status}: {detail[0][:300]}")
    return result


class NoneDriver(HubDriver):
    """For a hub the portal does not manage: every change succeeds without touching anything."""

    def apply_peers(self, hub: Hub, apply: Sequence[Peer] = (), remove: Sequence[str] = ()) -> None:
        return None


def ssh_target(hub: Hub) -> SshTarget:
    if not (hub.ssh_host and hub.ssh_host_key and hub.ssh_private_key):
        raise HubCommandFailed(f"hub {hub.name!r} has no complete SSH target (host, pinned host key, key)")
    return SshTarget(host=hub.ssh_host, port=hub.ssh_port, username=hub.ssh_user, host_key=hub.ssh_host_key,
                     private_key=hub.ssh_private_key)


def _ssh_driver(hub: Hub) -> WgDriver:
    config = current_app.config
    return WgDriver(SshRunner(ssh_target(hub), config["PORTAL_SSH_CONNECT_TIMEOUT"],
                              config["PORTAL_SSH_COMMAND_TIMEOUT"]))


def _local_driver(hub: Hub) -> WgDriver:
    return WgDriver(LocalRunner(current_app.config["PORTAL_SSH_COMMAND_TIMEOUT"]))


DRIVERS: dict[str, Callable[[Hub], HubDriver]] = {
    "none": lambda hub: NoneDriver(),
    "ssh": _ssh_driver,
    "local": _local_driver,
}


def driver_for(hub: Hub) -> HubDriver:
    try:
        factory = DRIVERS[hub.driver]
    except KeyError:
        raise ValueError(f"hub {hub.name!r} names an unknown driver {hub.driver!r}") from None
    return factory(hub)
