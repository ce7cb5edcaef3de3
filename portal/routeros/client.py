"""The portal's RouterOS API client, on top of `routeros-api` (its wire protocol, tags and login).

    with RouterSession(access) as router:      # TCP (or TLS on 8729, certificate pinned), then login
        facts = router.facts()                 # identity, version, board name, uptime
        require_wireguard(facts)                # RouterOS 6 is refused: WireGuard needs RouterOS 7
        changes = router.apply(wanted_state(peer_config, facts.version_tuple))

One session (connect, TLS handshake, login, every command, until it is closed) lasts at most `access.timeout`
seconds: every read and write on the socket gets what is left of that budget, so a router that accepts the
connection and never answers costs that long and no longer.

Errors are typed: `RouterUnreachable` (a `TransientError`: refused, no route, timeout, connection lost) is
worth retrying later; `RouterRefused` (a `DomainError`, with a message fit for a person) is not: bad
credentials, RouterOS older than 7, a certificate that is not the pinned one, a command the router refused
(its `!trap` message, with anything secret that was sent in this session blotted out).

TLS: the router's certificate is self-signed as a rule, so it is not verified against a CA; its SHA-256
fingerprint is pinned on first use (`seen_fingerprint` tells the caller what to store) and any other
certificate later is refused before the password is sent.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from routeros_api import api, api_communicator, api_socket, base_api, exceptions

from portal.errors import DomainError, TransientError
from portal.wireguard.render import (
    INTERFACE_NAME,
    KEEPALIVE_SECONDS,
    LISTEN_PORT,
    MTU,
    TAG_PREFIX,
    PeerConfig,
    config_tag,
)

T = TypeVar("T")

INTERFACES = "/interface/wireguard"
PEERS = "/interface/wireguard/peers"
ADDRESSES = "/ip/address"
FILTER = "/ip/firewall/filter"
LABELS = {INTERFACES: "interface", PEERS: "peer", ADDRESSES: "address", FILTER: "firewall rule"}
KEY_FIELDS = {INTERFACES: ("private-key",), PEERS: ("preshared-key",)}  # changing them changes the tunnel's keys
PEER_NAME = "vpn-portal-hub"
PEER_NAME_SINCE = (7, 15, 0)  # peers have a `name` from RouterOS 7.15
RESPONDER_SINCE = (7, 17, 0)  # `is-responder` became `responder` in 7.17; older versions are left at their default
WIREGUARD_SINCE = (7, 0, 0)
HIDDEN = "[hidden]"


class RouterUnreachable(TransientError):
    """No answer from the router's API for now: try again later."""


class RouterRefused(DomainError):
    """The router answered, and the answer means trying again will not help; the message says why."""


class BadCredentials(RouterRefused):
    pass


class UnsupportedVersion(RouterRefused):
    pass


class CertificateChanged(RouterRefused):
    pass


@dataclass(frozen=True)
class Access:
    """How to reach one router's API. `fingerprint` is the pinned certificate's, if one is pinned."""

    host: str
    port: int
    tls: bool
    username: str
    password: str = field(repr=False)
    fingerprint: str | None = None
    timeout: float = 10.0

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class Facts:
    identity: str
    version: str
    board: str
    uptime: str

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.version)


VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int]:
    """RouterOS's version string ("7.16.1 (stable)", "7.18beta2 (testing)", "6.49.10 (long-term)") as numbers."""
    match = VERSION.match(text.strip())
    if match is None:
        raise RouterRefused(f"The router reports a RouterOS version the portal does not understand: {text!r}.")
    return int(match[1]), int(match[2]), int(match[3] or 0)


def require_wireguard(facts: Facts) -> None:
    if facts.version_tuple < WIREGUARD_SINCE:
        raise UnsupportedVersion(f"The router runs RouterOS {facts.version}; WireGuard needs RouterOS 7. Upgrade "
                                 "RouterOS to 7.x, then try again.")


def fingerprint(certificate: bytes) -> str:
    """A DER certificate's SHA-256 as upper-case hex pairs joined by colons (95 characters)."""
    return ":".join(f"{byte:02X}" for byte in hashlib.sha256(certificate).digest())


# The wanted state ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Wanted:
    """What the router should hold, item by item, in RouterOS's own property names: the same values the `.rsc`
    script (`portal.wireguard.render.render_rsc`) writes, so both paths leave the same router."""

    tag: str
    interface: dict[str, str] = field(repr=False)
    address: dict[str, str]
    peer: dict[str, str] = field(repr=False)
    rule: dict[str, str]

    def menus(self) -> dict[str, dict[str, str]]:
        return {INTERFACES: self.interface, ADDRESSES: self.address, PEERS: self.peer}

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.interface["private-key"], self.peer["preshared-key"]


def wanted_state(peer: PeerConfig, version: tuple[int, int, int]) -> Wanted:
    """The router's side of `peer` for RouterOS `version` (peer `name` from 7.15, `responder` from 7.17)."""
    tag = config_tag(peer.configuration_id)
    hub_peer = {"interface": INTERFACE_NAME, "public-key": peer.hub_public_key, "preshared-key": peer.preshared_key,
                "endpoint-address": peer.hub_endpoint_host, "endpoint-port": str(peer.hub_endpoint_port),
                "allowed-address": str(peer.subnet), "persistent-keepalive": f"{KEEPALIVE_SECONDS}s", "comment": tag}
    if version >= PEER_NAME_SINCE:
        hub_peer["name"] = PEER_NAME
    if version >= RESPONDER_SINCE:
        hub_peer["responder"] = "no"
    return Wanted(
        tag=tag,
        interface={"name": INTERFACE_NAME, "listen-port": str(LISTEN_PORT), "mtu": str(MTU),
                   "private-key": peer.private_key, "comment": tag},
        address={"address": f"{peer.address}/{peer.subnet.prefixlen}", "interface": INTERFACE_NAME, "comment": tag},
        peer=hub_peer,
        rule={"chain": "input", "action": "accept", "in-interface": INTERFACE_NAME,
              "src-address": str(peer.hub_address), "comment": tag},
    )


# The session --------------------------------------------------------------------------------------

class _DeadlineSocket(api_socket.SocketWrapper):
    """routeros-api's socket wrapper, with every read and write bounded by what is left of the session's time."""

    def __init__(self, sock: socket.socket, deadline: float):
        super().__init__(sock)
        self.deadline = deadline

    def _budget(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self.socket.settimeout(left)

    def send(self, data: bytes):
        self._budget()
        return super().send(data)

    def receive(self, length: int) -> bytes:
        self._budget()
        return super().receive(length)


class RouterSession:
    """One API session with one router: `with RouterSession(access) as router: ...`."""

    def __init__(self, access: Access):
        self.access = access
        self.seen_fingerprint: str | None = None  # the TLS certificate's, once the handshake is done
        self.keys_sent = False  # a command that changes the tunnel's keys went out (its answer may not come back)
        self._api: api.RouterOsApi | None = None
        self._socket: socket.socket | None = None
        self._deadline = 0.0
        self._secrets: set[str] = {access.password} if access.password else set()

    def __enter__(self) -> RouterSession:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # connecting

    def connect(self) -> None:
        access = self.access
        self._deadline = time.monotonic() + access.timeout
        try:
            sock = socket.create_connection((access.host, access.port), timeout=access.timeout)
        except OSError as error:
            raise RouterUnreachable(self._network_error(error)) from None
        self._socket = sock
        try:
            if access.tls:
                sock = self._socket = self._tls(sock)
            communicator = api_communicator.ApiCommunicator(base_api.Connection(_DeadlineSocket(sock, self._deadline)))
            self._api = api.RouterOsApi(communicator)
            self._call(lambda: self._api.login(access.username, access.password, True), "the login")
        except BaseException:
            self.close()
            raise

    def _tls(self, sock: socket.socket) -> ssl.SSLSocket:
        """The TLS handshake, then the pin check: no password goes to a certificate that is not the pinned one."""
        access = self.access
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # self-signed as a rule: the fingerprint pin is the check
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        sock.settimeout(max(self._deadline - time.monotonic(), 0.001))
        try:
            wrapped = context.wrap_socket(sock, server_hostname=None if _is_ip(access.host) else access.host)
        except ssl.SSLError as error:
            raise RouterRefused(f"The TLS handshake with {access.where} failed ({error.reason or error}): is it the "
                                "router's api-ssl port, with a certificate? Or turn TLS off for port 8728.") from None
        except OSError as error:  # a plain API port answers a TLS hello with silence or a reset
            raise RouterUnreachable(f"{self._network_error(error)} during the TLS handshake: is it the router's "
                                    "api-ssl port (8729), with a certificate?") from None
        self._socket = wrapped  # closed with the session, whatever happens next
        certificate = wrapped.getpeercert(binary_form=True)
        if not certificate:
            raise RouterRefused(f"{access.where} sent no TLS certificate: give the api-ssl service one "
                                "(/ip service set api-ssl certificate=...).")
        seen = fingerprint(certificate)
        if access.fingerprint and seen != access.fingerprint:
            raise CertificateChanged(
                f"The router's TLS certificate changed: {access.where} now shows SHA-256 {seen}, the pinned one is "
                f"{access.fingerprint}. Nothing was sent to it. If the router's certificate was replaced on purpose, "
                "forget the pinned certificate in API access; otherwise someone may be in between.")
        self.seen_fingerprint = seen
        return wrapped

    def close(self) -> None:
        sock, self._socket, self._api = self._socket, None, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()

    # commands

    def print(self, path: str, props: Sequence[str] = (), where: dict[str, str] | None = None) -> list[dict[str, str]]:
        """`PATH/print` with `.proplist` and `?key=value` queries; each row's `.id` comes back as `id`."""
        arguments = {"proplist": ",".join(props)} if props else {}
        rows = self._call(lambda: self._resource(path).call("print", arguments, where or {}), f"{path}/print")
        return [dict(row) for row in rows]

    def add(self, path: str, values: dict[str, str]) -> str | None:
        done = self._call(lambda: self._resource(path).call("add", values), f"{path}/add")
        return done.done_message.get("ret")

    def set(self, path: str, item_id: str, values: dict[str, str]) -> None:
        self._call(lambda: self._resource(path).call("set", {"id": item_id, **values}), f"{path}/set")

    def remove(self, path: str, item_id: str) -> None:
        self._call(lambda: self._resource(path).call("remove", {"id": item_id}), f"{path}/remove")

    def move(self, path: str, item_id: str, before_id: str) -> None:
        self._call(lambda: self._resource(path).call("move", {"numbers": item_id, "destination": before_id}),
                   f"{path}/move")

    def set_all(self, writes: Sequence[tuple[str, str, dict[str, str]]]) -> None:
        """`set` several items in one go: every command is sent before any answer is read, so a change that cuts
        the connection it travels on (new tunnel keys, when the API is reached through the tunnel) does not keep
        the others from arriving."""
        def send_all():
            promises = [self._resource(path).call_async("set", {"id": item_id, **values})
                        for path, item_id, values in writes]
            return [promise.get() for promise in promises]

        self._call(send_all, "the key change")

    def _resource(self, path: str):
        if self._api is None:
            raise RouterUnreachable(f"{self.access.where}: not connected")
        return self._api.get_resource(path)

    # what the portal asks

    def facts(self) -> Facts:
        identity = next(iter(self.print("/system/identity")), {})
        resource = next(iter(self.print("/system/resource")), {})
        return Facts(identity=identity.get("name", ""), version=resource.get("version", ""),
                     board=resource.get("board-name", ""), uptime=resource.get("uptime", ""))

    def peer_state(self, tag: str | None) -> str:
        """The router's own view of the portal's peer: last handshake and traffic, in a line."""
        peers = _ours(self.print(PEERS, (".id", "comment", "last-handshake", "rx", "tx", "current-endpoint-address",
                                         "current-endpoint-port")))
        peer = next((row for row in peers if row.get("comment") == tag), peers[0] if peers else None)
        if peer is None:
            return "no portal peer on the router"
        handshake = peer.get("last-handshake")
        parts = [f"last handshake {handshake} ago" if handshake else "no handshake yet",
                 f"rx {peer.get('rx', '0')} B", f"tx {peer.get('tx', '0')} B"]
        if peer.get("current-endpoint-address"):
            parts.append(f"hub seen at {peer['current-endpoint-address']}:{peer.get('current-endpoint-port', '')}")
        if peer.get("comment") != tag:
            parts.append(f"(an older configuration: {peer.get('comment')})")
        return "; ".join(parts)[:255]

    def apply(self, wanted: Wanted) -> list[str]:
        """Bring the router to `wanted`, idempotently: for each menu, the items carrying the portal's comment tag
        (any configuration's) are found; one is kept (this configuration's if there is one), what differs is
        set, what is missing is added, the rest removed. The firewall rule ends above every other static rule.
        Key changes go last, in one pipelined write. Returns the changes made, or ["unchanged"]."""
        self._secrets.update(wanted.secrets)
        current = {path: self.print(path, (".id", "comment", *(("dynamic",) if path == FILTER else ()),
                                           *[key for key in values if key != "comment"]))
                   for path, values in {**wanted.menus(), FILTER: wanted.rule}.items()}
        plans = {path: _plan(rows, wanted.tag) for path, rows in current.items()}
        changes: list[str] = []
        for path in (FILTER, ADDRESSES, PEERS, INTERFACES):  # what refers to an interface goes before it
            for extra in plans[path][1]:
                self.remove(path, extra["id"])
                changes.append(f"{LABELS[path]}: removed {extra.get('comment')} (duplicate or older)")
        key_writes: list[tuple[str, str, dict[str, str]]] = []
        for path, values in wanted.menus().items():
            kept = plans[path][0]
            if kept is None:
                self.keys_sent = self.keys_sent or path in KEY_FIELDS
                self.add(path, values)
                changes.append(f"{LABELS[path]}: added")
                continue
            differ = {key: value for key, value in values.items() if not _same(kept.get(key), value)}
            keys = {key: value for key, value in differ.items() if key in KEY_FIELDS.get(path, ())}
            plain = {key: value for key, value in differ.items() if key not in keys}
            if plain:
                self.set(path, kept["id"], plain)
                changes.append(f"{LABELS[path]}: set {', '.join(sorted(plain))}")
            if keys:
                key_writes.append((path, kept["id"], keys))
        removed = {row["id"] for row in plans[FILTER][1]}
        changes += self._ensure_rule(wanted.rule, plans[FILTER][0],
                                     [row for row in current[FILTER] if row["id"] not in removed])
        if key_writes:
            self.keys_sent = True
            # The peer's preshared key first, then the interface's private key (which changes the tunnel at once).
            key_writes.sort(key=lambda write: write[0] != PEERS)
            self.set_all(key_writes)
            changes.append("keys: " + ", ".join(f"{LABELS[path]} {', '.join(sorted(values))}"
                                                for path, _, values in key_writes))
        return changes or ["unchanged"]

    def _ensure_rule(self, rule: dict[str, str], kept: dict[str, str] | None, rows: list[dict[str, str]]) -> list[str]:
        """The input rule for the hub, above every other static rule (the `.rsc` does the same with place-before)."""
        statics = [row["id"] for row in rows if not _true(row.get("dynamic"))]
        if kept is None:
            self.add(FILTER, {**rule, **({"place-before": statics[0]} if statics else {})})
            return [f"{LABELS[FILTER]}: added"]
        changes = []
        differ = {key: value for key, value in rule.items() if not _same(kept.get(key), value)}
        if differ:
            self.set(FILTER, kept["id"], differ)
            changes.append(f"{LABELS[FILTER]}: set {', '.join(sorted(differ))}")
        if statics and statics[0] != kept["id"]:
            self.move(FILTER, kept["id"], statics[0])
            changes.append(f"{LABELS[FILTER]}: moved above the other static rules")
        return changes

    # errors

    def _call(self, call: Callable[[], T], what: str) -> T:
        """Run one exchange with the router, its errors as the portal's."""
        try:
            return call()
        except exceptions.RouterOsApiCommunicationError as error:  # !trap
            message = self._hide(_text(error.original_message))
            if what == "the login":
                raise BadCredentials(f"The router refused the username or password (RouterOS said: {message}).") \
                    from None
            raise RouterRefused(f"The router refused {what}: {message}") from None
        except exceptions.RouterOsApiFatalCommunicationError:  # !fatal: the router ends the session
            raise RouterUnreachable(f"{self.access.where} ended the API session during {what}") from None
        except (exceptions.RouterOsApiParsingError, exceptions.FatalRouterOsApiError) as error:
            raise RouterRefused(f"{self.access.where} does not answer like a RouterOS API "
                                f"({self._hide(str(error))[:200]}).") from None
        except exceptions.RouterOsApiConnectionError as error:
            if time.monotonic() >= self._deadline or "timed out" in str(error):
                raise RouterUnreachable(f"{self.access.where}: no answer within {self.access.timeout:g} s "
                                        f"({what})") from None
            raise RouterUnreachable(f"{self.access.where}: connection lost during {what}") from None
        except (KeyError, ValueError, AssertionError) as error:  # a reply routeros-api could not map
            raise RouterRefused(f"{self.access.where} sent a reply the portal does not understand during {what} "
                                f"({type(error).__name__}).") from None

    def _network_error(self, error: OSError) -> str:
        if isinstance(error, TimeoutError | socket.timeout):
            return f"{self.access.where}: no answer within {self.access.timeout:g} s"
        reason = error.strerror or type(error).__name__
        if isinstance(error, socket.gaierror):
            return f"{self.access.host}: the name does not resolve ({reason})"
        return f"{self.access.where}: {reason.lower()}"

    def _hide(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, HIDDEN)
        return text


def _plan(rows: list[dict[str, str]], tag: str) -> tuple[dict[str, str] | None, list[dict[str, str]]]:
    """The portal's items in a menu: the one to keep (this configuration's, else the first), and the rest."""
    ours = _ours(rows)
    kept = next((row for row in ours if row.get("comment") == tag), ours[0] if ours else None)
    return kept, [row for row in ours if row is not kept]


def _ours(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if (row.get("comment") or "").startswith(TAG_PREFIX)]


TRUE, FALSE = {"yes", "true"}, {"no", "false"}


def _true(value: str | None) -> bool:
    return (value or "").lower() in TRUE


def _same(current: str | None, wanted: str) -> bool:
    if current is None:
        return False
    if wanted.lower() in TRUE | FALSE:
        return (current.lower() in TRUE) == (wanted.lower() in TRUE)
    return current == wanted


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
