"""How the portal talks to an OpenVPN server: the project's scripts, through a runner (`portal.remote`).

`ovpn-bootstrap.sh` prepares the server (PKI, server configuration, the `ovpn-client` script under
BASE/bin); `ovpn-client create|revoke|status` does the rest. The script knows a client only by its certificate's common
name (`VpnClient.common_name`), never by the name its tenant gave it. Every operation is an "ensure": creating a
client that exists prints its bundle again, revoking a revoked one succeeds. Common names are checked against
`CLIENT_NAME` here and again by the script. Exit 75 (the PKI lock is busy) and an unreachable host are
transient (the job retries); any other failure is not. Error messages carry the exit status and the
script's error output, never its standard output (which holds the client's key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from ipaddress import IPv4Address

from portal.errors import TransientError
from portal.openvpn.models import CLIENT_NAME, PROTOCOLS, OpenVpnServer, is_client_name
from portal.openvpn.render import BLOCKS
from portal.remote import RemoteCommandFailed, Runner, runner_for
from portal.ssh import CommandResult

SCRIPTS = files("portal.openvpn") / "scripts"
PKI_BUSY = 75
STDERR_MAX = 1000
BASE_DIR = re.compile(r"/[A-Za-z0-9._/-]{0,199}")
_SERIAL = re.compile(r"[0-9A-Fa-f]{1,64}")
_BUNDLE = re.compile("".join(rf"<{block}>\n.+?\n</{block}>\n*" for block in BLOCKS), re.DOTALL)
REVOKE_OUTCOMES = ("absent", "revoked", "already revoked")


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()


class ScriptFailed(RemoteCommandFailed):
    """The script ran and failed; the message names the command, its exit status and its error output."""

    def __init__(self, label: str, result: CommandResult):
        self.exit_status, self.stderr = result.exit_status, _bounded(result.stderr)
        detail = " | ".join(line for line in self.stderr.splitlines() if line.strip()) or "no error output"
        super().__init__(f"`{label}` exited {result.exit_status}: {detail}")


class PkiBusy(TransientError):
    """Another operation holds the server's PKI lock: transient."""

    def __init__(self, label: str, result: CommandResult):
        self.exit_status, self.stderr = result.exit_status, _bounded(result.stderr)
        super().__init__(f"`{label}`: the PKI is busy with another operation (exit {PKI_BUSY}); retrying")


def _bounded(text: str) -> str:
    text = text.strip()
    return text if len(text) <= STDERR_MAX else "…" + text[-STDERR_MAX:]


@dataclass(frozen=True)
class ScriptOutput:
    """What goes into the audit log of a script run: never its standard output when that holds a key."""

    exit_status: int
    stderr: str

    def details(self) -> dict:
        return {"exit_status": self.exit_status, "stderr": self.stderr}


@dataclass(frozen=True)
class Created(ScriptOutput):
    serial: str
    not_after: datetime
    bundle: str

    def details(self) -> dict:
        return {**super().details(), "serial": self.serial, "not_after": self.not_after.isoformat()}


@dataclass(frozen=True)
class Revoked(ScriptOutput):
    outcome: str  # absent | revoked | already revoked

    def details(self) -> dict:
        return {**super().details(), "outcome": self.outcome}


@dataclass(frozen=True)
class Session:
    """One connected client as `ovpn-client status` reports it; `name` is its certificate's common name."""

    name: str
    real_address: str
    virtual_address: str
    bytes_received: int
    bytes_sent: int
    connected_since: datetime | None


def check_name(name: str) -> str:
    if not is_client_name(name):
        raise ValueError(f"not a client name: {name!r}")
    return name


def check_base_dir(base_dir: str) -> str:
    if not BASE_DIR.fullmatch(base_dir) or ".." in base_dir.split("/") or base_dir.endswith("/"):
        raise ValueError("the base directory must be an absolute path of letters, digits, '.', '_', '-' and '/'")
    return base_dir


class OpenVpnDriver:
    def __init__(self, runner: Runner, base_dir: str):
        self.runner, self.base_dir = runner, check_base_dir(base_dir)

    @property
    def client_script(self) -> str:
        return f"{self.base_dir}/bin/ovpn-client"

    def _run(self, label: str, argv: list[str], stdin: str | None = None) -> CommandResult:
        result = self.runner.run(argv, stdin=stdin)
        if result.exit_status == PKI_BUSY:
            raise PkiBusy(label, result)
        if result.exit_status != 0:
            raise ScriptFailed(label, result)
        return result

    def bootstrap(self, server: OpenVpnServer) -> list[str]:
        """Bring the server to the desired state; one line per change, or `unchanged`."""
        if server.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {server.protocol!r}")
        argv = ["bash", "-c", script("ovpn-bootstrap.sh"), "ovpn-bootstrap", self.base_dir,
                str(IPv4Address(server.network)), str(IPv4Address(server.netmask)), str(int(server.remote_port)),
                server.protocol, str(int(server.management_port))]
        result = self._run("ovpn-bootstrap.sh", argv, stdin=script("ovpn-client.sh"))
        return [line for line in result.stdout.splitlines() if line.strip()]

    def create(self, common_name: str) -> Created:
        result = self._run("ovpn-client create", [self.client_script, "create", check_name(common_name)])
        return parse_create(result)

    def revoke(self, common_name: str) -> Revoked:
        result = self._run("ovpn-client revoke", [self.client_script, "revoke", check_name(common_name)])
        outcome = result.stdout.strip().splitlines()[-1:] or [""]
        if outcome[0] not in REVOKE_OUTCOMES:
            raise RemoteCommandFailed(f"`ovpn-client revoke` printed an unexpected outcome: {outcome[0][:80]!r}")
        return Revoked(result.exit_status, _bounded(result.stderr), outcome[0])

    def status(self) -> list[Session]:
        return parse_status(self._run("ovpn-client status", [self.client_script, "status"]).stdout)


def parse_create(result: CommandResult) -> Created:
    """The serial, expiry and credential blocks `ovpn-client create` prints. Errors never quote the output."""
    serial = not_after = None
    body = []
    for line in result.stdout.splitlines():
        if line.startswith("# serial:"):
            serial = line.split(":", 1)[1].strip()
        elif line.startswith("# not-after:"):
            not_after = line.split(":", 1)[1].strip()
        elif body or line.startswith("<"):
            body.append(line)
    bundle = "\n".join(body).strip("\n") + "\n"
    if serial is None or not _SERIAL.fullmatch(serial):
        raise RemoteCommandFailed("`ovpn-client create` printed no valid serial")
    try:
        expiry = datetime.strptime(not_after or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise RemoteCommandFailed("`ovpn-client create` printed no valid not-after date") from None
    if not _BUNDLE.fullmatch(bundle):
        raise RemoteCommandFailed("`ovpn-client create` printed an incomplete bundle "
                                  f"(expected the blocks {', '.join(BLOCKS)})")
    return Created(result.exit_status, _bounded(result.stderr), serial.upper(), expiry, bundle)


def parse_status(text: str) -> list[Session]:
    """`client<TAB>NAME<TAB>REAL<TAB>VIRTUAL<TAB>RX<TAB>TX<TAB>SINCE` lines; anything else is ignored."""
    sessions = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 7 or fields[0] != "client" or not CLIENT_NAME.fullmatch(fields[1]):
            continue
        try:
            received, sent, since = int(fields[4]), int(fields[5]), int(fields[6] or 0)
        except ValueError:
            continue
        sessions.append(Session(
            name=fields[1], real_address=fields[2][:64], virtual_address=fields[3][:45], bytes_received=received,
            bytes_sent=sent, connected_since=datetime.fromtimestamp(since, UTC) if since > 0 else None))
    return sessions


def driver_for(server: OpenVpnServer) -> OpenVpnDriver:
    """The driver for the server's runner: `ssh` (pinned host key) or `local`."""
    return OpenVpnDriver(runner_for(server.driver, server, f"OpenVPN server {server.name!r}"), server.base_dir)
