"""A protocol-level stand-in for a MikroTik router's API service, for tests (no RouterOS runs here).

It speaks the RouterOS API as LAB.md and MikroTik's manual describe it, written from those descriptions and not
from `routeros-api`, so the portal's client is checked against the protocol and not against itself:

- a word is a length prefix (1 byte below 0x80, 2 bytes `| 0x8000` below 0x4000, 3 bytes `| 0xC00000`, 4 bytes
  `| 0xE0000000`, or 0xF0 and 4 bytes) and its bytes; a sentence is words ending with an empty word;
- a command sentence is the command (`/interface/wireguard/print`), attribute words `=key=value` (an empty value
  may come as `=key`), query words `?key=value`, `?key`, `?-key`, `?<key=value`, `?>key=value`, `?#|&!` (the
  manual's stack of query results), and `.tag=N`, which every reply sentence of that command echoes;
- replies: one `!re` per row (`=.id=*N` and the row's properties, only those of `=.proplist=a,b` when given),
  then `!done` (`=ret=*N` after `add`); an error is `!trap` with `=message=` and then `!done`; `!fatal` ends the
  connection;
- login is RouterOS >= 6.43's: `/login =name=U =password=P` in plaintext (`!trap` "invalid user name or password
  (6)" for a wrong one); nothing else is answered before it.

Menus: `/interface/wireguard`, `/interface/wireguard/peers`, `/ip/address`, `/ip/firewall/filter` (print, add,
set, remove; `move` and `add place-before=` on the filter, whose `dynamic` rules cannot be changed),
`/system/identity` and `/system/resource` (print). It checks what a router checks, as far as the portal's use
goes: unknown parameters (peer `name` exists from 7.15, `responder` from 7.17), unique interface names, a peer's
or address's interface must exist, an interface in use cannot be removed, keys must be WireGuard keys; an
interface's `public-key` is derived from its private key. `version="6.49.10 (long-term)"` makes it a RouterOS 6
router (no WireGuard menus). `tls=True` serves TLS with a generated self-signed certificate (`use_new_certificate`
replaces it, as a reinstall would); `silent=True` accepts connections and never answers.

`RouterState` is the router's configuration and the commands on it; `tests.routeros.rsc_reader` runs the portal's
`.rsc` script against the same state, so the API push and the script can be compared.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import ipaddress
import re
import socket
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
WG_KEY = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
OTHER_INTERFACES = ("ether1", "ether2", "bridge")  # what a fresh router has besides the portal's


class Trap(Exception):
    """A command the router refuses: `!trap =message=...`."""


# The router's configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Menu:
    settable: frozenset[str]
    required: frozenset[str] = frozenset()
    since: dict[str, tuple[int, int]] = field(default_factory=dict)  # property -> first version that has it


MENUS = {
    "/interface/wireguard": Menu(frozenset({"name", "listen-port", "mtu", "private-key", "comment", "disabled"}),
                                 frozenset({"name"})),
    "/interface/wireguard/peers": Menu(
        frozenset({"interface", "public-key", "preshared-key", "endpoint-address", "endpoint-port", "allowed-address",
                   "persistent-keepalive", "comment", "disabled", "name", "responder"}),
        frozenset({"interface", "public-key"}), since={"name": (7, 15), "responder": (7, 17)}),
    "/ip/address": Menu(frozenset({"address", "interface", "comment", "disabled", "network"}),
                        frozenset({"address", "interface"})),
    "/ip/firewall/filter": Menu(frozenset({"chain", "action", "in-interface", "src-address", "comment", "disabled",
                                           "protocol", "dst-port", "connection-state"}), frozenset({"chain"})),
}
WIREGUARD_MENUS = ("/interface/wireguard", "/interface/wireguard/peers")


def public_key_of(private_key: str) -> str:
    private = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key))
    return base64.b64encode(private.public_key().public_bytes(serialization.Encoding.Raw,
                                                              serialization.PublicFormat.Raw)).decode()


class RouterState:
    """A router's configuration as menus of items with RouterOS ids (`*1`, `*2`, ...), and the commands on it.

    Thread-safe: the API server's connections and a test's script reader may use it at once."""

    def __init__(self, version: str = "7.16.1 (stable)", identity: str = "MikroTik", board: str = "RB5009UG+S+",
                 uptime: str = "3d4h5m6s"):
        self.version, self.identity, self.board, self.uptime = version, identity, board, uptime
        self.menus: dict[str, list[dict[str, str]]] = {path: [] for path in MENUS}
        self.peer_status: dict[str, dict[str, str]] = {}  # a peer's id -> what RouterOS reports (last-handshake...)
        self.listeners: list = []  # called with the state after every change (a system test mirrors it)
        self.lock = threading.RLock()
        self._ids = 0

    @property
    def version_tuple(self) -> tuple[int, int]:
        match = VERSION.match(self.version)
        return int(match[1]), int(match[2])

    # commands

    def execute(self, command: str, attributes: dict[str, str], queries: list[str] | None = None
                ) -> tuple[list[dict[str, str]], dict[str, str]]:
        """Run one API command; its `!re` rows and its `!done` attributes, or Trap."""
        with self.lock:
            result = self._execute(command, attributes, queries)
            if not command.endswith("/print"):
                for listener in self.listeners:
                    listener(self)
            return result

    def _execute(self, command: str, attributes: dict[str, str], queries: list[str] | None
                 ) -> tuple[list[dict[str, str]], dict[str, str]]:
        path, _, verb = command.rpartition("/")
        if path == "/system/identity" and verb == "print":
            return self._print([{"name": self.identity}], attributes, queries or []), {}
        if path == "/system/resource" and verb == "print":
            return self._print([self.resource()], attributes, queries or []), {}
        if path not in MENUS or (path in WIREGUARD_MENUS and self.version_tuple < (7, 0)):
            raise Trap("no such command prefix")
        if verb == "print":
            return self._print([self.row(path, item) for item in self.menus[path]], attributes, queries or []), {}
        if verb == "add":
            return [], {"ret": self.add(path, attributes)}
        if verb == "set":
            self.set(path, self._ids_of(path, attributes), attributes)
            return [], {}
        if verb == "remove":
            self.remove(path, self._ids_of(path, attributes))
            return [], {}
        if verb == "move" and path == "/ip/firewall/filter":
            self.move(path, attributes)
            return [], {}
        raise Trap("no such command")

    def resource(self) -> dict[str, str]:
        return {"uptime": self.uptime, "version": self.version, "build-time": "2024-10-01 12:00:00",
                "free-memory": "900000000", "total-memory": "1073741824", "cpu": "ARM64", "cpu-count": "4",
                "cpu-load": "1", "architecture-name": "arm64", "board-name": self.board, "platform": "MikroTik"}

    def add(self, path: str, attributes: dict[str, str]) -> str:
        values = {key: value for key, value in attributes.items() if key != "place-before"}
        self._check(path, values, adding=True)
        self._ids += 1
        item = {".id": f"*{self._ids:X}", **values}
        if path == "/interface/wireguard" and "private-key" not in item:
            item["private-key"] = base64.b64encode(X25519PrivateKey.generate().private_bytes_raw()).decode()
        items = self.menus[path]
        before = attributes.get("place-before")
        if before is not None and path == "/ip/firewall/filter":
            index = self._index(path, before)
            if self.menus[path][index].get("dynamic") == "true":
                raise Trap("cannot place before a dynamic rule")
            items.insert(index, item)
        else:
            items.append(item)
        return item[".id"]

    def set(self, path: str, ids: list[str], attributes: dict[str, str]) -> None:
        values = {key: value for key, value in attributes.items() if key not in (".id", "numbers")}
        for item_id in ids:
            item = self.menus[path][self._index(path, item_id)]
            if item.get("dynamic") == "true":
                raise Trap("cannot change dynamic")
            self._check(path, {**item, **values}, adding=False, item_id=item_id)
            if path == "/interface/wireguard" and "name" in values and values["name"] != item["name"]:
                self._rename(item["name"], values["name"])
            item.update(values)

    def remove(self, path: str, ids: list[str]) -> None:
        for item_id in ids:
            item = self.menus[path][self._index(path, item_id)]
            if item.get("dynamic") == "true":
                raise Trap("cannot remove dynamic")
            if path == "/interface/wireguard" and self._interface_in_use(item["name"]):
                raise Trap("interface is in use")
            self.menus[path].remove(item)
            self.peer_status.pop(item_id, None)

    def move(self, path: str, attributes: dict[str, str]) -> None:
        items = self.menus[path]
        moving = [items[self._index(path, item_id)] for item_id in attributes.get("numbers", "").split(",") if item_id]
        destination = attributes.get("destination")
        if not moving:
            raise Trap("no such item")
        for item in moving:
            items.remove(item)
        index = self._index(path, destination) if destination else len(items)
        items[index:index] = moving

    def find(self, path: str, predicate) -> list[str]:
        """The ids of the items of `path` whose row (as `print` shows it) satisfies `predicate`."""
        with self.lock:
            if path not in MENUS:
                raise Trap("no such command prefix")
            return [item[".id"] for item in self.menus[path] if predicate(self.row(path, item))]

    # what print shows

    def row(self, path: str, item: dict[str, str]) -> dict[str, str]:
        row = dict(item)
        row.setdefault("disabled", "false")
        row.setdefault("comment", None)
        if row["comment"] is None:
            del row["comment"]
        if path == "/interface/wireguard":
            row.setdefault("listen-port", "13231")
            row.setdefault("mtu", "1420")
            row["public-key"] = public_key_of(item["private-key"])
            row["running"] = "true"
        elif path == "/interface/wireguard/peers":
            row.update(self.peer_status.get(item[".id"], {"rx": "0", "tx": "0"}))
        elif path == "/ip/address":
            row["network"] = str(ipaddress.ip_interface(item["address"]).network.network_address)
            row["actual-interface"] = item["interface"]
        elif path == "/ip/firewall/filter":
            row.setdefault("action", "accept")
            row.setdefault("dynamic", "false")
            row.setdefault("invalid", "false")
        return row

    def snapshot(self) -> dict[str, list[dict[str, str]]]:
        """Every menu's items as print shows them, without ids: what two ways of configuring must agree on."""
        with self.lock:
            return {path: [{key: value for key, value in self.row(path, item).items() if key != ".id"}
                           for item in items] for path, items in self.menus.items()}

    def seed(self) -> None:
        """What a router in use has before the portal comes: an address, a dynamic rule and static input rules."""
        with self.lock:
            self.add("/ip/address", {"address": "192.168.88.1/24", "interface": "bridge", "comment": "defconf"})
            self.add("/ip/firewall/filter", {"chain": "forward", "action": "fasttrack-connection"})
            self.menus["/ip/firewall/filter"][-1]["dynamic"] = "true"  # the fasttrack counter RouterOS adds
            self.add("/ip/firewall/filter", {"chain": "input", "action": "accept", "connection-state":
                                             "established,related", "comment": "defconf: accept established"})
            self.add("/ip/firewall/filter", {"chain": "input", "action": "drop", "comment": "defconf: drop all"})

    # checks

    def _check(self, path: str, values: dict[str, str], adding: bool, item_id: str | None = None) -> None:
        menu = MENUS[path]
        for key in values:
            if key.startswith(".") or key in ("dynamic",):
                continue
            since = menu.since.get(key)
            if key not in menu.settable or (since is not None and self.version_tuple < since):
                raise Trap(f"unknown parameter {key}")
        missing = [key for key in menu.required if not values.get(key)]
        if adding and missing:
            raise Trap(f"missing value(s) of argument(s) {' '.join(sorted(missing))}")
        for key in ("private-key", "public-key", "preshared-key"):
            if values.get(key) and not WG_KEY.fullmatch(values[key]):
                raise Trap(f"invalid value for argument {key}")
        if path == "/interface/wireguard":
            taken = {item["name"] for item in self.menus[path] if item[".id"] != item_id} | set(OTHER_INTERFACES)
            if values["name"] in taken:
                raise Trap("failure: already have interface with such name")
        elif path == "/interface/wireguard/peers":
            if values["interface"] not in {item["name"] for item in self.menus["/interface/wireguard"]}:
                raise Trap("input does not match any value of interface")
        elif path == "/ip/address":
            try:
                ipaddress.ip_interface(values["address"])
            except ValueError:
                raise Trap("invalid value for argument address") from None
            if values["interface"] not in self._interface_names():
                raise Trap("input does not match any value of interface")
        elif path == "/ip/firewall/filter":
            interface = values.get("in-interface")
            if interface and interface not in self._interface_names():
                raise Trap("input does not match any value of in-interface")

    def _interface_names(self) -> set[str]:
        return {item["name"] for item in self.menus["/interface/wireguard"]} | set(OTHER_INTERFACES)

    def _interface_in_use(self, name: str) -> bool:
        return any(item.get("interface") == name for path in ("/interface/wireguard/peers", "/ip/address")
                   for item in self.menus[path])

    def _rename(self, old: str, new: str) -> None:
        """RouterOS refers to interfaces by object: a renamed one shows its new name everywhere."""
        for path, key in (("/interface/wireguard/peers", "interface"), ("/ip/address", "interface"),
                          ("/ip/firewall/filter", "in-interface")):
            for item in self.menus[path]:
                if item.get(key) == old:
                    item[key] = new

    def _index(self, path: str, item_id: str) -> int:
        for index, item in enumerate(self.menus[path]):
            if item[".id"] == item_id:
                return index
        raise Trap("no such item")

    def _ids_of(self, path: str, attributes: dict[str, str]) -> list[str]:
        ids = [item_id for item_id in (attributes.get(".id") or attributes.get("numbers") or "").split(",") if item_id]
        if not ids:
            raise Trap("missing value(s) of argument(s) .id")
        return ids

    # print with queries and .proplist

    @staticmethod
    def _print(rows: list[dict[str, str]], attributes: dict[str, str], queries: list[str]) -> list[dict[str, str]]:
        rows = [row for row in rows if _matches(row, queries)]
        proplist = attributes.get(".proplist")
        if proplist:
            wanted = proplist.split(",")
            rows = [{key: row[key] for key in wanted if key in row} for row in rows]
        return rows


def _matches(row: dict[str, str], queries: list[str]) -> bool:
    """The manual's query stack: each word pushes a result; `#` words combine the stack's top; all must hold."""
    stack: list[bool] = []
    for query in queries:
        if query.startswith("#"):
            for operator in query[1:]:
                if operator == "!":
                    stack.append(not stack.pop())
                elif operator in "|&":
                    right, left = stack.pop(), stack.pop()
                    stack.append(left or right if operator == "|" else left and right)
                elif operator == ".":
                    stack.append(stack[-1])
            continue
        if query.startswith("-"):
            stack.append(query[1:] not in row)
        elif query[:1] in "<>":
            key, _, value = query[1:].partition("=")
            current = row.get(key)
            stack.append(current is not None and (current < value if query[0] == "<" else current > value))
        elif "=" in query:
            key, _, value = query.partition("=")
            stack.append(row.get(key) == value)
        else:
            stack.append(query in row)
    return all(stack)


# The wire ------------------------------------------------------------------------------------------------

def encode_word(word: bytes) -> bytes:
    length = len(word)
    if length < 0x80:
        prefix = length.to_bytes(1, "big")
    elif length < 0x4000:
        prefix = (length | 0x8000).to_bytes(2, "big")
    elif length < 0x200000:
        prefix = (length | 0xC00000).to_bytes(3, "big")
    elif length < 0x10000000:
        prefix = (length | 0xE0000000).to_bytes(4, "big")
    else:
        prefix = b"\xf0" + length.to_bytes(4, "big")
    return prefix + word


def encode_sentence(words: list[str | bytes]) -> bytes:
    return b"".join(encode_word(word.encode() if isinstance(word, str) else word) for word in words) + b"\x00"


class Closed(Exception):
    pass


def _read_exactly(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            raise Closed
        data += chunk
    return data


def read_word(connection: socket.socket) -> bytes:
    first = _read_exactly(connection, 1)[0]
    if first < 0x80:
        length = first
    elif first < 0xC0:
        length = ((first & 0x3F) << 8) | _read_exactly(connection, 1)[0]
    elif first < 0xE0:
        length = ((first & 0x1F) << 16) | int.from_bytes(_read_exactly(connection, 2), "big")
    elif first < 0xF0:
        length = ((first & 0x0F) << 24) | int.from_bytes(_read_exactly(connection, 3), "big")
    elif first == 0xF0:
        length = int.from_bytes(_read_exactly(connection, 4), "big")
    else:
        raise Closed  # a control byte: RouterOS drops such a connection
    return _read_exactly(connection, length)


def read_sentence(connection: socket.socket) -> list[bytes]:
    words = []
    while word := read_word(connection):
        words.append(word)
    return words


@dataclass(frozen=True)
class Certificate:
    pem_path: Path
    key_path: Path
    der: bytes

    @property
    def fingerprint(self) -> str:
        return ":".join(f"{byte:02X}" for byte in hashlib.sha256(self.der).digest())


def make_certificate(directory: Path, name: str) -> Certificate:
    """A self-signed certificate, as `/certificate add ... sign` makes on a router."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=365)).sign(key, hashes.SHA256()))
    pem_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    pem_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Certificate(pem_path, key_path, certificate.public_bytes(serialization.Encoding.DER))


class FakeRouterOS:
    """The API service of one router, on 127.0.0.1 and a free port: `with FakeRouterOS(...) as router: ...`."""

    def __init__(self, *, username: str = "portal", password: str = "router-api-password", tls: bool = False,
                 silent: bool = False, state: RouterState | None = None, **state_options: str):
        self.username, self.password, self.tls, self.silent = username, password, tls, silent
        self.state = state or RouterState(**state_options)
        self.logins: list[tuple[str, bool]] = []  # (name, accepted) for every /login
        self.commands: list[str] = []  # every command after login, in order
        self.connections = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._open: list[socket.socket] = []
        self._dir = tempfile.TemporaryDirectory(prefix="fake-routeros-")
        self.certificate = make_certificate(Path(self._dir.name), "router") if tls else None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = "127.0.0.1", self._listener.getsockname()[1]

    def __enter__(self) -> FakeRouterOS:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> FakeRouterOS:
        self._listener.settimeout(0.1)
        self._spawn(self._accept)
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for connection in list(self._open):
            with contextlib.suppress(OSError):
                connection.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._dir.cleanup()

    def use_new_certificate(self) -> Certificate:
        """Another self-signed certificate from now on (what a reset or a new certificate on the router does)."""
        self.certificate = make_certificate(Path(self._dir.name), f"router-{self.connections}")
        return self.certificate

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fake-routeros")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._open.append(connection)
            self._spawn(self._serve, connection)

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(30)
            if self.tls:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(self.certificate.pem_path, self.certificate.key_path)
                connection = context.wrap_socket(connection, server_side=True)
                self._open.append(connection)
            if self.silent:
                while not self._stop.is_set() and connection.recv(4096):
                    pass
                return
            self._session(connection)
        except (Closed, OSError, ssl.SSLError, ValueError):  # gone, or garbage: RouterOS drops such a connection
            pass
        finally:
            with contextlib.suppress(OSError):
                connection.close()

    def _session(self, connection: socket.socket) -> None:
        logged_in = False
        while not self._stop.is_set():
            words = read_sentence(connection)
            if not words:
                continue
            command, attributes, queries, tag = _parse(words)
            if command == "/login":
                accepted = attributes.get("name") == self.username and attributes.get("password") == self.password
                self.logins.append((attributes.get("name", ""), accepted))
                if accepted:
                    logged_in = True
                    connection.sendall(encode_sentence(["!done", *_tag(tag)]))
                else:
                    connection.sendall(encode_sentence(["!trap", "=message=invalid user name or password (6)",
                                                        *_tag(tag)]) + encode_sentence(["!done", *_tag(tag)]))
                continue
            if not logged_in:
                connection.sendall(encode_sentence(["!fatal", "not logged in"]))
                return
            self.commands.append(command)
            try:
                rows, done = self.state.execute(command, attributes, queries)
            except Trap as trap:
                connection.sendall(encode_sentence(["!trap", f"=message={trap}", *_tag(tag)])
                                   + encode_sentence(["!done", *_tag(tag)]))
                continue
            reply = b"".join(encode_sentence(["!re", *[f"={key}={value}" for key, value in row.items()], *_tag(tag)])
                             for row in rows)
            connection.sendall(reply + encode_sentence(["!done", *[f"={key}={value}" for key, value in done.items()],
                                                        *_tag(tag)]))


def _tag(tag: str | None) -> list[str]:
    return [f".tag={tag}"] if tag is not None else []


def _parse(words: list[bytes]) -> tuple[str, dict[str, str], list[str], str | None]:
    command, attributes, queries, tag = words[0].decode("utf-8", "replace"), {}, [], None
    for raw in words[1:]:
        word = raw.decode("utf-8", "replace")
        if word.startswith("="):
            key, _, value = word[1:].partition("=")
            attributes[key] = value
        elif word.startswith("?"):
            queries.append(word[1:])
        elif word.startswith(".tag="):
            tag = word[len(".tag="):]
    return command, attributes, queries, tag
