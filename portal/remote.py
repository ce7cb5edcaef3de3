"""Running commands on a managed host (a WireGuard hub, an OpenVPN server): through SSH or locally.

A runner returns the command's exit status and output; `checked` turns a failure into
`RemoteCommandFailed`. A host that cannot be reached raises `HostUnreachable`, a TransientError, so
the job that asked retries later.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from flask import current_app
from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from portal import ssh
from portal.crypto import EncryptedText
from portal.jobs import TransientError
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
