"""Running commands on a managed host (a WireGuard hub, an OpenVPN server): through SSH or locally.

A runner returns the command's exit status and output; `checked` turns a failure into
`RemoteCommandFailed`. A host that cannot be reached raises `HostUnreachable`, a TransientError, so
the job that asked retries later.
"""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from flask import current_app
from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal import ssh
from portal.crypto import EncryptedText
from portal.errors import FieldError, TransientError, checked_field
from portal.ssh import CommandResult, SshTarget
from portal.types import UTCDateTime


class HostUnreachable(TransientError):
    pass


class RemoteCommandFailed(Exception):
    """The host ran a command and it failed: not a reason to hammer it again at once."""


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
            raise HostUnreachable(f"`{command}` did not finish within {self.timeout:g} s") from None
        except OSError as error:
            raise RemoteCommandFailed(f"cannot run {argv[0]}: {error.strerror}") from None
        return CommandResult(command=command, exit_status=done.returncode, stdout=done.stdout, stderr=done.stderr)


class SshRunner:
    """Runs commands over one SSH connection per host and worker process, reconnecting when it drops."""

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
                pass  # a stale connection (the host or its sshd restarted): one fresh try; commands are ensures
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


def checked(result: CommandResult, label: str) -> CommandResult:
    """The result of a command that succeeded; else a RemoteCommandFailed naming `label` (never the script text)."""
    if result.exit_status != 0:
        detail = result.stderr.strip().splitlines()[-1:] or ["no error output"]
        raise RemoteCommandFailed(f"`{label}` exited {result.exit_status}: {detail[0][:300]}")
    return result




class ManagedHost:
    """Columns of a host the portal manages (a hub, an OpenVPN server): its SSH target and what the monitor saw."""

    ssh_host: Mapped[str | None] = mapped_column(String(253))
    ssh_port: Mapped[int] = mapped_column(default=22)
    ssh_user: Mapped[str] = mapped_column(String(32), default="root")
    ssh_host_key: Mapped[str | None] = mapped_column(Text)  # pinned, as an OpenSSH public key line
    ssh_private_key: Mapped[str | None] = mapped_column(EncryptedText)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_poll_error: Mapped[str | None] = mapped_column(Text)


HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9A-Fa-f:.]{2,45}")


@dataclass(kw_only=True)
class SshSettings:
    """The SSH part of what a platform admin enters for a managed host (a hub, an OpenVPN server)."""

    driver: str = "ssh"
    ssh_host: str = ""
    ssh_port: int = 22
    ssh_user: str = "root"
    ssh_host_key: str = ""
    ssh_private_key: str = ""  # blank on edit: keep the stored one

    def validate_ssh(self, stored: ManagedHost | None, kind: str) -> None:
        """Check and normalise the SSH fields; each error names its field. A blank key keeps `stored`'s."""
        self.ssh_host = (self.ssh_host or "").strip()
        if not 1 <= self.ssh_port <= 65535:
            raise FieldError("ssh_port", "Ports are 1 to 65535.")
        if self.driver == "ssh":
            if not self.ssh_host:
                raise FieldError("ssh_host", f"An SSH {kind} needs the host the portal connects to.")
            if not self.ssh_host_key:
                raise FieldError("ssh_host_key", f"An SSH {kind} needs its host key, pinned.")
            if not self.ssh_private_key and (stored is None or not stored.ssh_private_key):
                raise FieldError("ssh_private_key", f"An SSH {kind} needs the private key the portal logs in with.")
        if self.ssh_host and not HOST_NAME.fullmatch(self.ssh_host):
            raise FieldError("ssh_host", "A host name or an IP address.")
        if self.ssh_host_key:
            self.ssh_host_key = checked_field(ssh.validate_host_key, self.ssh_host_key, "ssh_host_key")
        if self.ssh_private_key:
            self.ssh_private_key = checked_field(ssh.validate_private_key, self.ssh_private_key, "ssh_private_key")

    def apply_ssh(self, host: ManagedHost) -> dict:
        """Store the SSH fields on `host`; what the audit row may say of them (never the key)."""
        host.ssh_host, host.ssh_port, host.ssh_user = self.ssh_host or None, self.ssh_port, self.ssh_user
        host.ssh_host_key = self.ssh_host_key or None
        if self.ssh_private_key:
            host.ssh_private_key = self.ssh_private_key
        return {"ssh": f"{host.ssh_user}@{host.ssh_host}:{host.ssh_port}" if host.ssh_host else None,
                "host_key": ssh.fingerprint(host.ssh_host_key) if host.ssh_host_key else None}


def ssh_target(row: ManagedHost, label: str) -> SshTarget:
    """The SSH target of a hub or server row (ssh_host, ssh_port, ssh_user, ssh_host_key, ssh_private_key)."""
    if not (row.ssh_host and row.ssh_host_key and row.ssh_private_key):
        raise RemoteCommandFailed(f"{label} has no complete SSH target (host, pinned host key, key)")
    return SshTarget(host=row.ssh_host, port=row.ssh_port, username=row.ssh_user, host_key=row.ssh_host_key,
                     private_key=row.ssh_private_key)


def runner_for(kind: str, row: ManagedHost, label: str) -> Runner:
    """`ssh` to the row's SSH target, or `local` for a portal installed on the host itself."""
    config = current_app.config
    if kind == "local":
        return LocalRunner(config["PORTAL_SSH_COMMAND_TIMEOUT"])
    if kind == "ssh":
        return SshRunner(ssh_target(row, label), config["PORTAL_SSH_CONNECT_TIMEOUT"],
                         config["PORTAL_SSH_COMMAND_TIMEOUT"])
    raise ValueError(f"{label} names an unknown runner {kind!r}")
