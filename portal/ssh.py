"""SSH to the machines the portal manages (paramiko): pinned host keys, timeouts, captured output.

The server must present exactly the host key pinned for it: no known_hosts files, no agent, no keys looked
up on disk, and a changed or unknown key is refused before anything runs. Errors carry a message for a
person and say whether retrying can help: a mismatched host key or a refused login is permanent
(`SshError`); an unreachable host, a dropped connection or a slow command is transient (`TransientError`,
so jobs retry). Messages never contain key material.
"""

from __future__ import annotations

import base64
import binascii
import io
import select
import shlex
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.ssh_exception import IncompatiblePeer, NoValidConnectionsError

from portal.errors import TransientError

READ_CHUNK = 65536
QUOTED_COMMAND_CHARS = 120  # how much of a long command line (an inline script) error messages quote
POLL_SECONDS = 1.0  # how often a waiting `run` checks that the connection is still alive
PRIVATE_KEY_CLASSES: dict[type, type[paramiko.PKey]] = {
    ed25519.Ed25519PrivateKey: paramiko.Ed25519Key,
    ec.EllipticCurvePrivateKey: paramiko.ECDSAKey,
    rsa.RSAPrivateKey: paramiko.RSAKey,
}


class SshError(Exception):
    """Permanent: retrying will not help until someone changes a key, an account or the command."""


class HostKeyMismatch(SshError):
    """The server did not present the pinned host key (a reinstalled host, or someone in the middle)."""


class SshAuthFailed(SshError):
    """The server refused the login with the stored private key."""


class SshUnreachable(TransientError):
    """Refused, timed out, unknown host name, or the connection dropped: retrying may help."""


class CommandTimedOut(TransientError):
    """A command did not finish in time (the connection itself stays usable)."""


@dataclass(frozen=True)
class SshTarget:
    host: str
    port: int
    username: str
    host_key: str  # pinned OpenSSH public key line: "ssh-ed25519 AAAA..." (a trailing comment is ignored)
    private_key: str = field(repr=False)  # OpenSSH or PEM text; never shown

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        """The name paramiko looks the server's key up under, as in a known_hosts file."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


@dataclass(frozen=True)
class CommandResult:
    command: str  # the shell command line that ran (shlex.join of argv)
    exit_status: int  # -1 when the command was killed by a signal
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


# --- keys -------------------------------------------------------------------------------------------------


def parse_host_key(line: str) -> paramiko.PKey:
    """The public key in an OpenSSH key line ("TYPE BASE64 [comment]"); ValueError says what is wrong."""
    fields = (line or "").split()
    if len(fields) < 2:
        raise ValueError('expected an OpenSSH public key line such as "ssh-ed25519 AAAA..." (type, then key)')
    key_type, data = fields[:2]
    try:
        blob = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {key_type} key is not valid base64") from None
    try:
        key = paramiko.PKey.from_type_string(key_type, blob)
    except paramiko.UnknownKeyType:
        raise ValueError(f"unsupported key type {key_type!r} (expected ssh-ed25519, ecdsa-sha2-nistp256/384/521 "
                         "or ssh-rsa)") from None
    except Exception:  # paramiko raises many types on malformed key data
        raise ValueError(f"the key data is not a valid {key_type} public key") from None
    if key.get_name() != key_type:
        raise ValueError(f"the key data is a {key.get_name()} key, not {key_type}")
    return key


def validate_host_key(line: str) -> str:
    """The key line normalised to "TYPE BASE64" (comment dropped), for storing; ValueError if unusable."""
    key = parse_host_key(line)
    return f"{key.get_name()} {key.get_base64()}"


def fingerprint(host_key_line: str) -> str:
    """The key's SHA256 fingerprint as `ssh-keygen -l` prints it ("SHA256:..." without padding)."""
    return parse_host_key(host_key_line).fingerprint


def _normalise_private_key(text: str) -> str:
    # Forms send CRLF and stray indentation; key blocks are line-oriented base64.
    return "\n".join(line.strip() for line in (text or "").strip().splitlines()) + "\n"


def load_private_key(text: str) -> paramiko.PKey:
    """The unencrypted Ed25519, ECDSA or RSA private key in `text` (OpenSSH, PKCS#1/SEC1 or PKCS#8 PEM).

    cryptography reads every format; paramiko then gets the key in OpenSSH form, the one all its key
    classes read.
    """
    data = _normalise_private_key(text).encode()
    if b"PRIVATE KEY-----" not in data:
        raise ValueError("not a private key (expected a block starting with -----BEGIN ... PRIVATE KEY-----)")
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError("the private key is protected by a passphrase; store an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError("the private key block is damaged or in an unknown format") from None
    key_class = next((cls for kind, cls in PRIVATE_KEY_CLASSES.items() if isinstance(key, kind)), None)
    if key_class is None:
        raise ValueError("unsupported private key type (expected Ed25519, ECDSA or RSA)")
    try:
        openssh = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                    serialization.NoEncryption())
        return key_class.from_private_key(io.StringIO(openssh.decode()))
    except (paramiko.SSHException, ValueError):  # e.g. an ECDSA curve paramiko does not speak
        raise ValueError("unsupported private key (ECDSA keys must use NIST P-256, P-384 or P-521)") from None


def validate_private_key(text: str) -> str:
    """The key text normalised (LF line ends, no stray whitespace), for storing; ValueError if unusable."""
    load_private_key(text)
    return _normalise_private_key(text)


# --- sessions ---------------------------------------------------------------------------------------------


def _quoted(command: str) -> str:
    return command if len(command) <= QUOTED_COMMAND_CHARS else command[:QUOTED_COMMAND_CHARS] + "..."


class SshSession:
    """One authenticated connection; `run` may be called many times, by one thread at a time."""

    def __init__(self, client: paramiko.SSHClient, target: SshTarget, command_timeout: float):
        self.client, self.target, self.command_timeout = client, target, command_timeout

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, argv: Sequence[str], stdin: str | bytes | None = None, timeout: float | None = None,
            check: bool = False) -> CommandResult:
        """Run argv (quoted with shlex.join, so no argument is ever shell syntax) and capture its output.

        The whole command, output included, must finish within `timeout` (default: the session's command
        timeout), or CommandTimedOut; a dropped connection raises SshUnreachable. With `check`, a non-zero
        exit raises SshError.
        """
        if isinstance(argv, str | bytes) or not argv:
            raise TypeError("argv must be a non-empty sequence of arguments, not a shell string")
        command = shlex.join(argv)
        limit = self.command_timeout if timeout is None else timeout
        try:
            stdout, stderr, status = self._execute(command, stdin, limit)
        except TimeoutError:
            raise CommandTimedOut(f"`{_quoted(command)}` on {self.target.address} did not finish within "
                                  f"{limit:g} s") from None
        except (paramiko.SSHException, EOFError, OSError) as error:
            raise SshUnreachable(f"lost the connection to {self.target.address}: {_reason(error, limit)}") \
                from error
        result = CommandResult(command, status, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        if check and not result.ok:
            tail = result.stderr.strip().splitlines()[-1:] or ["no error output"]
            raise SshError(f"`{_quoted(command)}` exited {status}: {tail[0][:300]}")
        return result

    def _execute(self, command: str, stdin: str | bytes | None, limit: float) -> tuple[bytes, bytes, int]:
        deadline = time.monotonic() + limit
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("the connection is closed")
        channel = transport.open_session(timeout=limit)
        feeder = None
        try:
            channel.settimeout(limit)
            channel.exec_command(command)
            feeder = _send_input(channel, stdin.encode() if isinstance(stdin, str) else stdin)
            stdout, stderr = _collect(channel, transport, deadline)
            return stdout, stderr, _exit_status(channel, transport, deadline)
        finally:
            channel.close()
            if feeder is not None:
                feeder.join(POLL_SECONDS)

    def close(self) -> None:
        self.client.close()


def _send_input(channel: paramiko.Channel, data: bytes | None) -> threading.Thread | None:
    """Write stdin, then end it. Big input goes from a thread: a command that writes much before it has read
    all its input would otherwise block on its output while we block on its input."""
    if not data:
        channel.shutdown_write()
        return None

    def feed() -> None:
        try:
            channel.sendall(data)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited without reading everything, or the connection dropped: the reader reports

    thread = threading.Thread(target=feed, name="ssh-stdin", daemon=True)
    thread.start()
    return thread


def _collect(channel: paramiko.Channel, transport: paramiko.Transport, deadline: float) -> tuple[bytes, bytes]:
    """stdout and stderr, read as they come (both at once, so neither can fill up and stall the command)."""
    stdout, stderr = bytearray(), bytearray()
    while True:
        while channel.recv_ready():
            stdout += channel.recv(READ_CHUNK)
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(READ_CHUNK)
        if (channel.eof_received or channel.closed) and not (channel.recv_ready() or channel.recv_stderr_ready()):
            return bytes(stdout), bytes(stderr)
        _wait(deadline, transport)
        select.select([channel], [], [], min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def _exit_status(channel: paramiko.Channel, transport: paramiko.Transport, deadline: float) -> int:
    while not channel.status_event.wait(min(POLL_SECONDS, max(0.0, deadline - time.monotonic()))):
        _wait(deadline, transport)
    if channel.exit_status == -1 and not transport.is_active():
        raise EOFError("the connection dropped while the command ran")
    return channel.exit_status


def _wait(deadline: float, transport: paramiko.Transport) -> None:
    if not transport.is_active():
        raise EOFError("the connection dropped while the command ran")
    if time.monotonic() >= deadline:
        raise TimeoutError


# --- connecting -------------------------------------------------------------------------------------------


def connect(target: SshTarget, *, connect_timeout: float, command_timeout: float) -> SshSession:
    """A logged-in session to `target`, or SshError (permanent) / SshUnreachable (worth retrying)."""
    try:
        pinned = parse_host_key(target.host_key)
    except ValueError as error:
        raise SshError(f"the pinned host key for {target.address} is not usable: {error}") from None
    try:
        client_key = load_private_key(target.private_key)
    except ValueError as error:
        raise SshError(f"the private key for {target.address} is not usable: {error}") from None
    client = paramiko.SSHClient()
    client.get_host_keys().add(target.known_hosts_name, pinned.get_name(), pinned)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(target.host, port=target.port, username=target.username, pkey=client_key,
                       look_for_keys=False, allow_agent=False, timeout=connect_timeout,
                       banner_timeout=connect_timeout, auth_timeout=connect_timeout)
    except Exception as error:
        mapped = _connect_error(error, client, target, pinned, connect_timeout)
        client.close()
        if mapped is None:
            raise
        raise mapped from error
    return SshSession(client, target, command_timeout)


def _connect_error(error: Exception, client: paramiko.SSHClient, target: SshTarget, pinned: paramiko.PKey,
                   timeout: float) -> Exception | None:
    """The domain error for what `SSHClient.connect` raised (None: not ours to translate)."""
    address = target.address
    if isinstance(error, paramiko.BadHostKeyException):
        return _mismatch(address, pinned, error.key)
    if isinstance(error, paramiko.SSHException) and "not found in known_hosts" in str(error):
        transport = client.get_transport()  # the server offered a key of another type than the pinned one
        return _mismatch(address, pinned, transport.get_remote_server_key() if transport else None)
    if isinstance(error, paramiko.AuthenticationException):
        if "timeout" in str(error).lower():
            return SshUnreachable(f"cannot reach {address}: no answer to the login within {timeout:g} s")
        allowed = getattr(error, "allowed_types", None)
        detail = f" (it only allows {', '.join(allowed)})" if allowed else ""
        return SshAuthFailed(f"{address} refused the login of {target.username!r} with the stored key{detail}")
    if isinstance(error, IncompatiblePeer):
        return SshError(f"cannot talk to {address}: no SSH algorithm in common ({error})")
    if isinstance(error, paramiko.SSHException | EOFError | OSError):
        return SshUnreachable(f"cannot reach {address}: {_reason(error, timeout)}")
    return None


def _mismatch(address: str, pinned: paramiko.PKey, offered: paramiko.PKey | None) -> HostKeyMismatch:
    if offered is None:
        got = "a key of another type"
    elif offered.get_name() != pinned.get_name():
        got = f"{offered.get_name()} key {offered.fingerprint}"
    else:
        got = offered.fingerprint
    return HostKeyMismatch(f"host key of {address} does not match the pinned key (expected {pinned.fingerprint}, "
                           f"got {got})")


def _reason(error: BaseException, timeout: float) -> str:
    """A short lower-case reason ("connection refused") for a network error."""
    if isinstance(error, NoValidConnectionsError) and error.errors:
        return _reason(next(iter(error.errors.values())), timeout)
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(error, socket.gaierror):
        return "unknown host name"
    if isinstance(error, paramiko.SSHException) and "protocol banner" in str(error):
        return "no SSH server answered (no protocol banner)"
    if isinstance(error, paramiko.SSHException) and "No existing session" in str(error):
        return "the SSH handshake did not complete"  # paramiko's words when the transport died under the login
    if isinstance(error, EOFError):
        return str(error) or "the server closed the connection"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
