"""The RouterOS API client (`portal.routeros.client`) against the in-test router (`tests.routeros.fake_routeros`):
idempotent pushes, the `.rsc` cross-check, version rules, credentials, timeouts, TLS pinning."""

from __future__ import annotations

import socket
import time
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network

import pytest

from portal.crypto import generate_keypair, generate_preshared_key
from portal.routeros.client import (
    ADDRESSES,
    FILTER,
    INTERFACES,
    PEERS,
    Access,
    BadCredentials,
    CertificateChanged,
    RouterRefused,
    RouterSession,
    RouterUnreachable,
    UnsupportedVersion,
    require_wireguard,
    wanted_state,
)
from portal.wireguard.render import PeerConfig, render_rsc
from tests import vectors
from tests.routeros.fake_routeros import FakeRouterOS, RouterState, Trap
from tests.routeros.rsc_reader import ScriptError, run_script

PASSWORD = "router-api-password"


def peer_config(configuration_id: int = 7, **changes) -> PeerConfig:
    keys = generate_keypair()
    peer = PeerConfig(configuration_id=configuration_id, router_name="Branch 7", address=IPv4Address("10.100.3.2"),
                      subnet=IPv4Network("10.100.3.0/24"), hub_address=IPv4Address("10.100.3.1"),
                      private_key=keys.private, preshared_key=generate_preshared_key(),
                      hub_public_key=vectors.HUB_PUBLIC_KEY, hub_endpoint_host="hub.test.example",
                      hub_endpoint_port=51820)
    return replace(peer, **changes)


def access(router: FakeRouterOS, **changes) -> Access:
    return replace(Access(host=router.host, port=router.port, tls=router.tls, username="portal", password=PASSWORD,
                          timeout=5), **changes)


def push(router: FakeRouterOS, peer: PeerConfig, **access_changes) -> list[str]:
    with RouterSession(access(router, **access_changes)) as session:
        facts = session.facts()
        require_wireguard(facts)
        return session.apply(wanted_state(peer, facts.version_tuple))


def portal_items(state: RouterState) -> dict[str, list[dict[str, str]]]:
    return {path: [row for row in rows if (row.get("comment") or "").startswith("vpn-portal:")]
            for path, rows in state.snapshot().items()}


@pytest.fixture
def router():
    with FakeRouterOS(version="7.12.1 (stable)") as fake:
        fake.state.seed()
        yield fake


def test_pushing_twice_leaves_one_interface_one_peer_one_address_one_firewall_rule(router):
    peer = peer_config()
    first = push(router, peer)
    assert first == ["interface: added", "address: added", "peer: added", "firewall rule: added"]
    second = push(router, peer)
    assert second == ["unchanged"]
    ours = portal_items(router.state)
    assert {path: len(rows) for path, rows in ours.items()} == {INTERFACES: 1, PEERS: 1, ADDRESSES: 1, FILTER: 1}
    interface, = ours[INTERFACES]
    assert interface["private-key"] == peer.private_key and interface["name"] == "wg-portal"
    hub_peer, = ours[PEERS]
    assert (hub_peer["public-key"], hub_peer["preshared-key"]) == (vectors.HUB_PUBLIC_KEY, peer.preshared_key)
    assert hub_peer["allowed-address"] == "10.100.3.0/24" and hub_peer["persistent-keepalive"] == "25s"
    assert ours[ADDRESSES][0]["address"] == "10.100.3.2/24"
    # The hub's rule is the first static rule: above the router's own "drop all" (the dynamic one stays first).
    rules = router.state.snapshot()[FILTER]
    assert [rule.get("comment") for rule in rules] == [None, "vpn-portal:cfg-7", "defconf: accept established",
                                                        "defconf: drop all"]


def test_a_push_repairs_drift_and_removes_duplicates_and_older_configurations(router):
    peer = peer_config()
    push(router, peer)
    state = router.state
    with state.lock:
        interface_id = state.menus[INTERFACES][0][".id"]
        rule_id = next(rule[".id"] for rule in state.menus[FILTER] if rule.get("comment") == "vpn-portal:cfg-7")
    state.execute(f"{INTERFACES}/set", {".id": interface_id, "mtu": "1280", "listen-port": "5000"})
    state.execute(f"{FILTER}/move", {"numbers": rule_id})  # someone moved it to the end
    state.execute(f"{ADDRESSES}/add", {"address": "10.100.3.9/24", "interface": "wg-portal",
                                       "comment": "vpn-portal:cfg-3"})  # an older configuration's leftover

    changes = push(router, peer)

    assert "address: removed vpn-portal:cfg-3 (duplicate or older)" in changes
    assert "interface: set listen-port, mtu" in changes
    assert "firewall rule: moved above the other static rules" in changes
    ours = portal_items(state)
    assert [len(rows) for rows in ours.values()] == [1, 1, 1, 1]
    assert ours[INTERFACES][0]["mtu"] == "1420"
    assert [rule.get("comment") for rule in state.snapshot()[FILTER]][1] == "vpn-portal:cfg-7"
    assert push(router, peer) == ["unchanged"]


def test_new_keys_go_last_and_in_one_pipelined_write(router):
    peer = peer_config()
    push(router, peer)
    rotated = replace(peer, private_key=generate_keypair().private, preshared_key=generate_preshared_key())
    router.commands.clear()
    with RouterSession(access(router)) as session:
        changes = session.apply(wanted_state(rotated, (7, 12, 1)))
        assert session.keys_sent
    assert changes == ["keys: peer preshared-key, interface private-key"]
    assert router.commands[-2:] == [f"{PEERS}/set", f"{INTERFACES}/set"]
    ours = portal_items(router.state)
    assert ours[INTERFACES][0]["private-key"] == rotated.private_key
    assert ours[PEERS][0]["preshared-key"] == rotated.preshared_key


@pytest.mark.parametrize("version", ["7.12.1 (stable)", "7.16.2 (stable)", "7.18 (stable)"])
def test_the_rsc_script_and_the_api_push_leave_the_same_router(version):
    """Cross-check: the downloaded script, imported (read by a small RouterOS script reader), and the API push,
    from the same starting point, end in the same state; each also converges from the other's result."""
    peer = peer_config(configuration_id=42)
    script = render_rsc(peer)
    by_script, by_api = RouterState(version=version), RouterState(version=version)
    for state in (by_script, by_api):
        state.seed()
        older = peer_config(configuration_id=3)
        run_script(state, render_rsc(older))  # an older configuration of this router was imported before
    run_script(by_script, script)
    with FakeRouterOS(state=by_api, version=version) as fake:
        push(fake, peer)
        api_state = by_api.snapshot()
        api_peer = portal_items(by_api)[PEERS][0]
        # 7.15+ names the peer, 7.17+ says it is not a responder: the API push uses them where they exist.
        assert ("name" in api_peer, "responder" in api_peer) == (version >= "7.15", version >= "7.17")
        for name in ("name", "responder"):
            for row in api_state[PEERS]:
                row.pop(name, None)
        assert by_script.snapshot() == api_state

        run_script(by_api, script)  # the script after the push: the same again
        assert by_api.snapshot() == by_script.snapshot()
        assert push(fake, peer) != ["unchanged"] if version >= "7.15" else push(fake, peer) == ["unchanged"]
        assert [len(rows) for rows in portal_items(by_api).values()] == [1, 1, 1, 1]


def test_the_script_reader_refuses_what_it_does_not_know():
    state = RouterState()
    with pytest.raises(ScriptError):
        run_script(state, '/interface wireguard add name="$name"')
    with pytest.raises(ScriptError):
        run_script(state, "/system reboot")


def test_the_fake_router_knows_which_version_has_which_peer_parameter():
    state = RouterState(version="7.14.3 (stable)")
    state.execute(f"{INTERFACES}/add", {"name": "wg1"})
    with pytest.raises(Trap, match="unknown parameter name"):
        state.execute(f"{PEERS}/add", {"interface": "wg1", "public-key": vectors.HUB_PUBLIC_KEY, "name": "x"})
    with pytest.raises(Trap, match="no such command prefix"):
        RouterState(version="6.49.10 (long-term)").execute(f"{INTERFACES}/print", {})


def test_routeros_6_is_refused_with_a_clear_message():
    with FakeRouterOS(version="6.49.10 (long-term)") as router:
        with pytest.raises(UnsupportedVersion, match=r"RouterOS 6\.49\.10.*WireGuard needs RouterOS 7"):
            push(router, peer_config())
        assert router.commands == ["/system/identity/print", "/system/resource/print"]  # nothing was changed


def test_a_wrong_password_is_reported_as_such():
    with FakeRouterOS() as router:
        with pytest.raises(BadCredentials, match="refused the username or password"):
            push(router, peer_config(), password="not-the-password")
        assert router.logins == [("portal", False)] and router.commands == []


def test_a_refused_command_shows_the_routers_message_without_secrets():
    peer = peer_config()
    with FakeRouterOS() as router:
        router.state.add(INTERFACES, {"name": "wg-portal", "comment": "someone else's"})  # the name is taken
        with pytest.raises(RouterRefused, match="already have interface with such name") as refused:
            push(router, peer)
    assert peer.private_key not in str(refused.value) and PASSWORD not in str(refused.value)


def test_secrets_sent_in_a_session_are_blotted_out_of_what_the_router_says():
    peer = peer_config()
    session = RouterSession(Access(host="192.0.2.7", port=8729, tls=True, username="portal", password=PASSWORD))
    session._secrets.update(wanted_state(peer, (7, 16, 0)).secrets)
    message = f"invalid value {peer.private_key} of private-key (user portal, password {PASSWORD})"
    assert session._hide(message) == "invalid value [hidden] of private-key (user portal, password [hidden])"


def test_a_router_that_never_answers_times_out_within_the_bound():
    with FakeRouterOS(silent=True) as router:
        started = time.monotonic()
        with pytest.raises(RouterUnreachable, match=r"no answer within 1\.5 s"):
            RouterSession(access(router, timeout=1.5)).connect()
        assert 1.4 < time.monotonic() - started < 2.5


def test_a_port_nobody_listens_on_is_unreachable_at_once():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(RouterUnreachable, match="connection refused"):
        RouterSession(Access(host="127.0.0.1", port=port, tls=False, username="u", password="p", timeout=5)).connect()
    assert time.monotonic() - started < 1


def test_tls_pins_the_certificate_on_first_use_and_refuses_another_before_sending_the_password():
    with FakeRouterOS(tls=True) as router:
        with RouterSession(access(router)) as session:
            session.facts()
        assert session.seen_fingerprint == router.certificate.fingerprint and len(session.seen_fingerprint) == 95
        pinned = session.seen_fingerprint
        with RouterSession(access(router, fingerprint=pinned)) as session:
            assert session.facts().identity == "MikroTik"
        assert router.logins == [("portal", True), ("portal", True)]

        router.use_new_certificate()
        with pytest.raises(CertificateChanged, match="certificate changed") as changed:
            RouterSession(access(router, fingerprint=pinned)).connect()
        assert router.certificate.fingerprint in str(changed.value)
        assert len(router.logins) == 2  # the password never went to the new certificate


def test_tls_against_a_plain_api_port_says_what_may_be_wrong():
    """A plain API port answers a TLS hello with an API error (a TLS protocol error here), a reset, or silence."""
    with FakeRouterOS(tls=False) as router:
        with pytest.raises((RouterRefused, RouterUnreachable), match="is it the router's api-ssl port"):
            RouterSession(access(router, tls=True, timeout=1)).connect()
        assert router.logins == []


def test_print_sends_queries_and_a_proplist_and_long_words_cross_the_wire_intact(router):
    with RouterSession(access(router)) as session:
        rules = session.print(FILTER, (".id", "comment"), where={"chain": "input"})
        assert [rule["comment"] for rule in rules] == ["defconf: accept established", "defconf: drop all"]
        assert all(set(rule) == {"id", "comment"} for rule in rules)
        for length in (0x7F, 0x80, 0x3FFF, 0x4000, 0x20000):  # 1-, 2- and 3-byte length prefixes
            comment = "c" * length
            item_id = session.add(ADDRESSES, {"address": "192.0.2.1/32", "interface": "ether1", "comment": comment})
            found = session.print(ADDRESSES, (".id", "comment"), where={".id": item_id})
            assert found == [{"id": item_id, "comment": comment}]
            session.remove(ADDRESSES, item_id)


def test_the_fake_routers_query_stack():
    from tests.routeros.fake_routeros import _matches

    row = {"chain": "input", "action": "drop"}
    assert _matches(row, ["chain=input", "action=accept", "#|"])
    assert not _matches(row, ["chain=input", "action=accept", "#&"])
    assert _matches(row, ["-comment", "action", "chain=forward", "#!"])
