"""Pure text to and from a hub's `wg`: dump parsing, peer batches, desired state, firewall rules."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Network

import pytest

from portal.crypto import generate_keypair, generate_preshared_key
from portal.wireguard.wgtext import (
    DumpError,
    Peer,
    TenantNetwork,
    batch_lines,
    parse_dump,
    render_firewall,
    render_hub_state,
)

HUB = generate_keypair()
ROUTER = generate_keypair()
PSK = generate_preshared_key()

DUMP = (
    f"{HUB.private}\t{HUB.public}\t51820\toff\n"
    f"{ROUTER.public}\t{PSK}\t192.0.2.10:41000\t10.100.0.2/32\t1795000000\t1234\t5678\toff\n"
    f"{generate_keypair().public}\t(none)\t(none)\t(none)\t0\t0\t0\t25\n"
)


def test_dump_parses_interface_and_peers():
    dump = parse_dump(DUMP)
    assert dump.public_key == HUB.public and dump.listen_port == 51820
    peer = dump.peers[ROUTER.public]
    assert peer.preshared_key == PSK and peer.endpoint == "192.0.2.10:41000"
    assert peer.allowed_ips == ("10.100.0.2/32",)
    assert peer.latest_handshake == datetime.fromtimestamp(1795000000, UTC)
    assert (peer.rx_bytes, peer.tx_bytes) == (1234, 5678)
    silent = [p for key, p in dump.peers.items() if key != ROUTER.public][0]
    assert silent.preshared_key is None and silent.endpoint is None and silent.allowed_ips == ()
    assert silent.latest_handshake is None


@pytest.mark.parametrize("text", ["", "only\tthree\tfields\n", DUMP + "short\tline\n",
                                  DUMP.replace("1234", "lots")])
def test_dump_rejects_what_it_does_not_understand(text):
    with pytest.raises(DumpError):
        parse_dump(text)


def test_peer_state_matches_only_same_key_material_and_address():
    state = parse_dump(DUMP).peers[ROUTER.public]
    assert state.matches(Peer(ROUTER.public, PSK, ("10.100.0.2/32",)))
    assert not state.matches(Peer(ROUTER.public, generate_preshared_key(), ("10.100.0.2/32",)))
    assert not state.matches(Peer(ROUTER.public, PSK, ("10.100.0.3/32",)))


@pytest.mark.parametrize("bad", [
    {"public_key": "x --remove"}, {"preshared_key": "a b"}, {"allowed_ips": ("10.0.0.0/8 peer",)},
    {"public_key": ROUTER.public[:-2] + "B="},  # 44 characters, but not a 32-byte key
])
def test_peers_reject_anything_that_could_break_a_batch_line(bad):
    values = {"public_key": ROUTER.public, "preshared_key": PSK, "allowed_ips": ("10.100.0.2/32",)} | bad
    with pytest.raises(ValueError):
        Peer(**values)


def test_batch_lines_and_a_peer_repr_without_the_preshared_key():
    peer = Peer(ROUTER.public, PSK, ("10.100.0.2/32",))
    gone = generate_keypair().public
    assert batch_lines([peer], [gone]) == f"set {ROUTER.public} {PSK} 10.100.0.2/32\nremove {gone}\n"
    assert PSK not in repr(peer)


def test_hub_state_is_wg_format_with_every_peer():
    text = render_hub_state(HUB.private, 51820, [Peer(ROUTER.public, PSK, ("10.100.0.2/32",))])
    assert text == (f"[Interface]\nPrivateKey = {HUB.private}\nListenPort = 51820\n\n"
                    f"[Peer]\nPublicKey = {ROUTER.public}\nPresharedKey = {PSK}\nAllowedIPs = 10.100.0.2/32\n")


def test_firewall_keeps_tenants_apart_and_honours_router_to_router():
    text = render_firewall("wg0", [
        TenantNetwork(IPv4Network("10.100.0.0/16"), "10.100.0.1", router_to_router=True),
        TenantNetwork(IPv4Network("10.101.0.0/16"), "10.101.0.1", router_to_router=False),
    ])
    lines = [line.strip() for line in text.splitlines()]
    assert lines[:2] == ["table inet portal_wg0", "delete table inet portal_wg0"]  # replaced as one batch
    assert 'iifname "wg0" ip saddr 10.101.0.0/16 ip daddr 10.101.0.1 accept' in lines
    assert 'iifname "wg0" oifname "wg0" ip saddr 10.100.0.0/16 ip daddr 10.100.0.0/16 accept' in lines
    assert not any("ip saddr 10.101.0.0/16 ip daddr 10.101.0.0/16" in line for line in lines)
    forward = lines[lines.index("chain forward {"):]
    assert forward[forward.index("}") - 1] == 'iifname "wg0" drop'  # everything else from routers is dropped


def test_firewall_refuses_an_interface_name_that_is_not_one():
    with pytest.raises(ValueError):
        render_firewall('wg0" accept; #', [])
