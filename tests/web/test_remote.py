"""The local runner (a portal installed on the hub itself) and the WireGuard driver running through it."""

from __future__ import annotations

import pytest

from portal.errors import TransientError
from portal.remote import HostUnreachable, LocalRunner, RemoteCommandFailed, checked
from portal.wireguard.drivers import WgDriver
from portal.wireguard.models import Hub
from portal.wireguard.wgtext import Peer
from tests.conftest import require
from tests.lab import Namespace, lab_missing, start_wireguard_go


def test_local_runner_captures_exit_status_stdout_and_stderr():
    result = LocalRunner(timeout=5).run(["sh", "-c", 'read line; echo "out $line"; echo err >&2; exit 3'],
                                        stdin="in\n")
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out in\n", "err\n")
    with pytest.raises(RemoteCommandFailed, match=r"`probe` exited 3: err"):
        checked(result, "probe")


def test_local_runner_turns_a_hung_command_into_a_transient_error():
    with pytest.raises(HostUnreachable, match="did not finish within 0.2 s") as raised:
        LocalRunner(timeout=0.2).run(["sleep", "5"])
    assert isinstance(raised.value, TransientError)


def test_local_runner_reports_a_missing_program_as_a_failure_not_a_crash():
    with pytest.raises(RemoteCommandFailed, match="cannot run no-such-wg"):
        LocalRunner(timeout=5).run(["no-such-wg", "show"])


class InNamespace(LocalRunner):
    """The local runner, as on a hub host whose WireGuard is the namespace's (this machine stays untouched)."""

    def __init__(self, namespace: Namespace):
        super().__init__(timeout=10)
        self.namespace = namespace

    def run(self, argv, stdin=None):
        return super().run(self.namespace.wrap(argv), stdin=stdin)


def test_the_wireguard_driver_applies_and_removes_peers_through_the_local_runner():
    missing = lab_missing()
    require(missing is None, missing or "")
    namespace = Namespace("hub")
    try:
        start_wireguard_go(namespace)
        namespace.run(["wg", "set", "wg0", "listen-port", "51820"])
        driver, hub = WgDriver(InNamespace(namespace)), Hub(name="local", interface="wg0")
        peer = Peer(public_key="xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=",
                    preshared_key="FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=", allowed_ips=("10.100.0.2/32",))
        applied = driver.apply_peer(hub, peer)
        assert applied.peers[peer.public_key].matches(peer)
        assert driver.apply_peer(hub, peer).peers.keys() == applied.peers.keys()  # an ensure: twice is once
        assert peer.public_key not in driver.remove_peer(hub, peer.public_key).peers
        assert driver.dump(hub).listen_port == 51820
    finally:
        namespace.close()
