"""Tests for portal.wireguard.render: RouterOS script and wg-quick rendering.

The golden files in tests/golden/ are compared byte for byte. After an intended change of the output,
rewrite them with

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest -q tests/wireguard/test_render.py

then review the diff of tests/golden/ by eye before committing it.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from portal.wireguard.render import (
    PeerConfig,
    download_filename,
    render_conf,
    render_rsc,
    routeros_string,
)

GOLDEN = Path(__file__).parent.parent / "golden"
PRIVATE_KEY = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk="
HUB_PUBLIC_KEY = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="
PRESHARED_KEY = "FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE="
TAG = "vpn-portal:cfg-42"
MALICIOUS_NAME = 'x"; /system reset-configuration; :put "'

PEER = PeerConfig(
    configuration_id=42,
    router_name="Core Router 1",
    address=IPv4Address("10.100.0.2"),
    subnet=IPv4Network("10.100.0.0/16"),
    hub_address=IPv4Address("10.100.0.1"),
    private_key=PRIVATE_KEY,
    preshared_key=PRESHARED_KEY,
    hub_public_key=HUB_PUBLIC_KEY,
    hub_endpoint_host="hub.example.net",
    hub_endpoint_port=51820,
)


# --- a small RouterOS tokenizer ----------------------------------------------------------------------------

_UNESCAPES = {
    "\\": "\\", '"': '"', "$": "$", "?": "?", "_": " ",
    "n": "\n", "r": "\r", "t": "\t", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
}


@dataclass
class Token:
    bare: str = ""  # the token's text outside quotes, each quoted string shown as ""
    strings: list[str] = field(default_factory=list)  # the decoded quoted strings, in order


def tokenize(line: str) -> list[Token]:
    """Split one RouterOS command line at unquoted blanks; fails on an unterminated or malformed string."""
    tokens: list[Token] = []
    current: Token | None = None
    i = 0
    while i < len(line):
        char = line[i]
        if char in " \t":
            if current is not None:
                tokens.append(current)
            current, i = None, i + 1
            continue
        current = current or Token()
        if char == '"':
            value, i = _read_string(line, i + 1)
            current.bare += '""'
            current.strings.append(value)
        else:
            current.bare += char
            i += 1
    if current is not None:
        tokens.append(current)
    return tokens


def _read_string(line: str, i: int) -> tuple[str, int]:
    """Decode the string starting after the opening quote at line[i - 1]; return it and the index after it."""
    out = bytearray()
    while i < len(line):
        char = line[i]
        if char == '"':
            return out.decode("utf-8"), i + 1
        if char == "\\":
            pair = line[i + 1 : i + 3]
            if re.fullmatch(r"[0-9A-F]{2}", pair):
                out.append(int(pair, 16))
                i += 3
                continue
            assert line[i + 1 : i + 2] in _UNESCAPES, f"bad escape in {line!r}"
            out += _UNESCAPES[line[i + 1]].encode()
            i += 2
            continue
        assert " " <= char <= "~", f"raw control or non-ASCII character in a string: {line!r}"
        out += char.encode()
        i += 1
    raise AssertionError(f"string not terminated on its line: {line!r}")


def decode(literal: str) -> str:
    """The value of one complete RouterOS string literal."""
    [token] = tokenize(literal)
    assert token.bare == '""'
    return token.strings[0]


def command_lines(script: str) -> list[str]:
    return [line.strip() for line in script.split("\n") if line.strip() and not line.lstrip().startswith("#")]


def arguments(line: str) -> dict[str, str]:
    """The `name=value` arguments of a command line, quoted values decoded."""
    args = {}
    for token in tokenize(line):
        name, equals, value = token.bare.partition("=")
        if equals:
            args[name] = token.strings[0] if value == '""' else value
    return args


def command(script: str, prefix: str) -> dict[str, str]:
    [line] = [line for line in command_lines(script) if line.startswith(prefix)]
    return arguments(line)


# --- routeros_string ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ("back\\slash", '"back\\\\slash"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("$HOME", '"\\$HOME"'),
        ("why?", '"why\\?"'),
        ("a\nb\rc\td", '"a\\nb\\rc\\td"'),
        ("\x00\x1b\x7f", '"\\00\\1B\\7F"'),
        ("é", '"\\C3\\A9"'),
    ],
)
def test_routeros_string_escapes(value: str, literal: str) -> None:
    assert routeros_string(value) == literal


def test_routeros_string_round_trips_every_character() -> None:
    value = "".join(chr(code) for code in range(128)) + "é€😀"
    literal = routeros_string(value)
    assert literal.isascii() and literal.isprintable()
    assert decode(literal) == value


def test_routeros_string_keeps_an_injection_inside_one_token() -> None:
    tokens = tokenize(f":put {routeros_string(MALICIOUS_NAME)}")
    assert [token.bare for token in tokens] == [":put", '""']
    assert tokens[1].strings == [MALICIOUS_NAME]


# --- render_rsc -----------------------------------------------------------------------------------

def test_rsc_header() -> None:
    script = render_rsc(PEER)
    header = script.split("\n\n")[0].split("\n")
    assert all(line.startswith("# ") for line in header)
    text = "\n".join(header)
    for expected in (
        "VPN portal",
        "Router: Core Router 1",
        "Configuration: 42",
        "RouterOS 7",
        "/import file-name=core-router-1-cfg42.rsc",
        "Safe to run twice",
    ):
        assert expected in text


def test_rsc_removes_every_portal_item_before_adding() -> None:
    """Also an older, revoked configuration's items: the new one reuses the interface name."""
    lines = command_lines(render_rsc(PEER))
    removes = [line for line in lines if " remove " in line]
    ours = '[find where comment~"^vpn-portal:cfg-"]'
    assert removes == [
        f"/ip firewall filter remove {ours}",
        f"/ip address remove {ours}",
        f"/interface wireguard peers remove {ours}",
        f"/interface wireguard remove {ours}",
    ]
    first_add = next(i for i, line in enumerate(lines) if " add " in line)
    assert lines.index(removes[-1]) < first_add


def test_rsc_tags_every_added_item() -> None:
    adds = [line for line in command_lines(render_rsc(PEER)) if " add " in line]
    assert len(adds) == 5  # interface, address, peer, and the firewall rule in both branches of the :if
    assert all(arguments(line)["comment"] == TAG for line in adds)


def test_rsc_items() -> None:
    script = render_rsc(PEER)
    assert command(script, "/interface wireguard add") == {
        "name": "wg-portal",
        "listen-port": "13231",
        "mtu": "1420",
        "private-key": PRIVATE_KEY,
        "comment": TAG,
    }
    assert command(script, "/ip address add") == {
        "address": "10.100.0.2/16", "interface": "wg-portal", "comment": TAG,
    }
    assert command(script, "/interface wireguard peers add") == {
        "interface": "wg-portal",
        "public-key": HUB_PUBLIC_KEY,
        "preshared-key": PRESHARED_KEY,
        "endpoint-address": "hub.example.net",
        "endpoint-port": "51820",
        "allowed-address": "10.100.0.0/16",
        "persistent-keepalive": "25s",
        "comment": TAG,
    }


def test_rsc_firewall_rule_goes_on_top_or_alone() -> None:
    lines = command_lines(render_rsc(PEER))
    start = lines.index(":if ([:len [/ip firewall filter find where dynamic=no]] > 0) do={")
    on_top, otherwise = lines[start + 1], lines[start + 3]
    assert lines[start + 2] == "} else={" and lines[start + 4] == "}"
    rule = {
        "chain": "input", "action": "accept", "in-interface": "wg-portal", "src-address": "10.100.0.1",
        "comment": TAG,
    }
    placement = " place-before=[:pick [/ip firewall filter find where dynamic=no] 0]"
    assert on_top.endswith(placement)
    assert arguments(on_top.removesuffix(placement)) == arguments(otherwise) == rule


def test_rsc_is_ascii_with_lf_endings() -> None:
    script = render_rsc(replace(PEER, router_name="Zürich\r\nrouter"))
    assert script.isascii() and "\r" not in script
    assert script.endswith("\n") and not script.endswith("\n\n")


@pytest.mark.parametrize("name", [MALICIOUS_NAME, "a\n/system reset-configuration\n#", "a\\\n/system reset"])
def test_rsc_injection_stays_in_comments_and_strings(name: str) -> None:
    script = render_rsc(replace(PEER, router_name=name))
    for line in script.split("\n"):
        if line.lstrip().startswith("#"):
            continue
        for token in tokenize(line):
            assert "/system" not in token.bare and "reset-configuration" not in token.bare, line
            assert "#" not in token.bare, line
    assert all(line.startswith("# ") for line in script.split("\n") if "system" in line)
    assert f"\n# Router: {_commented(name)}\n" in script


def _commented(name: str) -> str:
    return "".join(char if " " <= char <= "~" and char != "\\" else "?" for char in name)


# --- render_conf ----------------------------------------------------------------------------------

def _parse_conf(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_conf_and_rsc_describe_the_same_peer() -> None:
    conf = _parse_conf(render_conf(PEER))
    script = render_rsc(PEER)
    interface = command(script, "/interface wireguard add")
    peer = command(script, "/interface wireguard peers add")
    address = command(script, "/ip address add")["address"]
    host, _, port = conf["Peer"]["Endpoint"].rpartition(":")

    assert conf["Interface"]["PrivateKey"] == interface["private-key"] == PRIVATE_KEY
    assert conf["Peer"]["PublicKey"] == peer["public-key"] == HUB_PUBLIC_KEY
    assert conf["Peer"]["PresharedKey"] == peer["preshared-key"] == PRESHARED_KEY
    assert conf["Interface"]["Address"].split("/")[0] == address.split("/")[0] == str(PEER.address)
    assert (host, port) == (peer["endpoint-address"], peer["endpoint-port"]) == ("hub.example.net", "51820")
    assert conf["Peer"]["AllowedIPs"] == peer["allowed-address"] == str(PEER.subnet)
    assert conf["Peer"]["PersistentKeepalive"] + "s" == peer["persistent-keepalive"]
    assert conf["Interface"]["MTU"] == interface["mtu"]
    assert "DNS" not in conf["Interface"]


def test_conf_ipv6_endpoint_in_brackets() -> None:
    ipv6_peer = replace(PEER, hub_endpoint_host="2001:db8::1")
    assert "\nEndpoint = [2001:db8::1]:51820\n" in render_conf(ipv6_peer)
    peer = command(render_rsc(ipv6_peer), "/interface wireguard peers add")
    assert peer["endpoint-address"] == "2001:db8::1"


def test_conf_comment_cannot_be_broken_by_the_name() -> None:
    conf = render_conf(replace(PEER, router_name="evil\n[Peer]\nAllowedIPs = 0.0.0.0/0"))
    assert conf.count("\n") == 12
    assert conf.startswith("# VPN portal configuration 42 for router evil?[Peer]?AllowedIPs = 0.0.0.0/0\n")
    assert _parse_conf(conf)["Peer"]["AllowedIPs"] == "10.100.0.0/16"


@pytest.mark.parametrize(
    "change",
    [
        {"hub_endpoint_host": "hub\nDNS = 1.1.1.1"},
        {"private_key": PRIVATE_KEY + " # x"},
        {"preshared_key": ""},
    ],
)
def test_conf_rejects_values_that_would_break_the_file(change: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        render_conf(replace(PEER, **change))


@pytest.mark.skipif(
    not (shutil.which("wg") and shutil.which("wg-quick")), reason="wireguard-tools (wg, wg-quick) not on PATH"
)
@pytest.mark.skipif(os.geteuid() != 0, reason="wg-quick re-executes itself through sudo unless run as root")
def test_conf_accepted_by_wg_quick_strip(tmp_path: Path) -> None:
    path = tmp_path / "wgtest0.conf"  # wg-quick derives the interface name from the file name
    path.write_text(render_conf(PEER))
    path.chmod(0o600)
    result = subprocess.run(["wg-quick", "strip", str(path)], capture_output=True, text=True, check=True)
    stripped = result.stdout

    sections: dict[str, set[str]] = {}
    current: set[str] = set()
    for line in stripped.splitlines():
        if line.startswith("["):
            current = sections.setdefault(line, set())
        elif "=" in line:
            current.add(line.split("=", 1)[0].strip())
    assert sections == {
        "[Interface]": {"PrivateKey"},
        "[Peer]": {"PublicKey", "PresharedKey", "Endpoint", "AllowedIPs", "PersistentKeepalive"},
    }
    assert "AllowedIPs = 10.100.0.0/16" in stripped
    assert "Address" not in stripped and "MTU" not in stripped
    public = subprocess.run(["wg", "pubkey"], input=PRIVATE_KEY, capture_output=True, text=True, check=True)
    assert len(public.stdout.strip()) == 44


# --- download_filename ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Core Router 1", "core-router-1-cfg42.rsc"),
        ("  --A..b__c--  ", "a-b-c-cfg42.rsc"),
        (MALICIOUS_NAME, "x-system-reset-configuration-put-cfg42.rsc"),
        ("../../etc/passwd", "etc-passwd-cfg42.rsc"),
        ("ÄÖÜ", "router-cfg42.rsc"),
        ("", "router-cfg42.rsc"),
        ("a" * 39 + "-b" + "c" * 10, "a" * 39 + "-cfg42.rsc"),
    ],
)
def test_download_filename(name: str, expected: str) -> None:
    assert download_filename(name, 42, "rsc") == expected


@pytest.mark.parametrize("extension", ["", ".rsc", "r/c", "conf\n"])
def test_download_filename_rejects_bad_extensions(extension: str) -> None:
    with pytest.raises(ValueError):
        download_filename("router", 1, extension)


# --- golden files ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "render"), [("router.rsc", render_rsc), ("router.conf", render_conf)])
def test_golden(name: str, render: Callable[[PeerConfig], str]) -> None:
    rendered = render(PEER).encode("ascii")
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(rendered)
    assert path.read_bytes() == rendered
