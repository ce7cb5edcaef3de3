"""portal.ssh: key parsing (always), and a real private OpenSSH server on 127.0.0.1 (needs root and sshd)."""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import threading
import time

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from portal import ssh
from portal.errors import TransientError
from tests.conftest import require
from tests.lab import Sshd, run, sshd_missing

MiB = 1024 * 1024
TIMEOUTS = {"connect_timeout": 5, "command_timeout": 10}


def private_text(key, form=serialization.PrivateFormat.OpenSSH, password: bytes | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, form, encryption).decode()


def public_line(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.fixture(scope="module")
def ed25519_key():
    return ed25519.Ed25519PrivateKey.generate()


# --- keys: no server needed -------------------------------------------------------------------------------


def test_host_keys_of_each_type_parse_and_normalise(ed25519_key):
    for key in (ed25519_key, ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)):
        line = public_line(key)
        parsed = ssh.parse_host_key(f"  {line} admin@hub comment  ")
        assert f"{parsed.get_name()} {parsed.get_base64()}" == line
        assert ssh.validate_host_key(f"{line} a comment\n") == line


@pytest.mark.parametrize(("line", "message"), [
    ("", "expected an OpenSSH public key line"),
    ("ssh-ed25519", "expected an OpenSSH public key line"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    ("ssh-dss AAAAB3NzaC1kc3M=", "unsupported key type 'ssh-dss'"),
    ("SSH-ED25519 AAAAC3NzaC1lZDI1NTE5", "unsupported key type"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not a valid ssh-ed25519 public key"),  # type only, no key bytes
    ("ssh-ed25519 aGVsbG8gd29ybGQ=", "not a valid ssh-ed25519 public key"),
])
def test_bad_host_keys_are_refused_with_a_reason(line, message):
    with pytest.raises(ValueError, match=message):
        ssh.parse_host_key(line)
    with pytest.raises(ValueError):
        ssh.validate_host_key(line)


def test_a_host_key_line_whose_type_does_not_match_its_data_is_refused():
    rsa_data = public_line(rsa.generate_private_key(65537, 2048)).split()[1]
    with pytest.raises(ValueError, match="ssh-ed25519"):
        ssh.parse_host_key(f"ssh-ed25519 {rsa_data}")


def test_fingerprint_is_openssh_sha256(ed25519_key):
    line = public_line(ed25519_key)
    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    assert ssh.fingerprint(line) == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert ssh.fingerprint(line + " with comment") == ssh.fingerprint(line)


@pytest.mark.parametrize(("make", "form", "key_class"), [
    (ed25519.Ed25519PrivateKey.generate, serialization.PrivateFormat.OpenSSH, paramiko.Ed25519Key),
    (ed25519.Ed25519PrivateKey.generate, serialization.PrivateFormat.PKCS8, paramiko.Ed25519Key),
    (lambda: ec.generate_private_key(ec.SECP384R1()), serialization.PrivateFormat.TraditionalOpenSSL,
     paramiko.ECDSAKey),
    (lambda: ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.OpenSSH, paramiko.ECDSAKey),
    (lambda: rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.TraditionalOpenSSL,
     paramiko.RSAKey),
    (lambda: rsa.generate_private_key(65537, 2048), serialization.PrivateFormat.PKCS8, paramiko.RSAKey),
])
def test_private_keys_load_from_openssh_and_pem(make, form, key_class):
    key = make()
    text = private_text(key, form)
    loaded = ssh.load_private_key(text)
    assert isinstance(loaded, key_class)
    assert f"{loaded.get_name()} {loaded.get_base64()}" == public_line(key)
    pasted = "\r\n".join(f"  {line}" for line in text.splitlines()) + "\r\n\r\n"  # as a form textarea sends it
    assert ssh.validate_private_key(pasted) == text


@pytest.mark.parametrize(("text", "message"), [
    ("", "not a private key"),
    ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA comment", "not a private key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n", "damaged"),
    ("-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n", "damaged"),
])
def test_bad_private_keys_are_refused_with_a_reason(text, message):
    with pytest.raises(ValueError, match=message):
        ssh.load_private_key(text)
    with pytest.raises(ValueError, match=message):
        ssh.validate_private_key(text)


def test_encrypted_and_unsupported_private_keys_are_refused_with_a_reason():
    encrypted = private_text(ed25519.Ed25519PrivateKey.generate(), password=b"secret")
    with pytest.raises(ValueError, match="passphrase"):
        ssh.load_private_key(encrypted)
    with pytest.raises(ValueError, match="unsupported private key type"):
        ssh.load_private_key(private_text(dsa.generate_private_key(2048), serialization.PrivateFormat.PKCS8))
    with pytest.raises(ValueError, match="P-256"):
        ssh.load_private_key(private_text(ec.generate_private_key(ec.SECP256K1()),
                                          serialization.PrivateFormat.TraditionalOpenSSL))


def test_targets_never_show_the_private_key(ed25519_key):
    secret = private_text(ed25519_key)
    target = ssh.SshTarget("192.0.2.1", 22, "root", public_line(ed25519_key), secret)
    assert "PRIVATE" not in repr(target) and target.known_hosts_name == "192.0.2.1"
    assert ssh.SshTarget("192.0.2.1", 2222, "root", "", "").known_hosts_name == "[192.0.2.1]:2222"


def test_unreachable_and_timeouts_are_transient_the_rest_permanent():
    assert issubclass(ssh.SshUnreachable, TransientError) and issubclass(ssh.CommandTimedOut, TransientError)
    assert issubclass(ssh.HostKeyMismatch, ssh.SshError) and issubclass(ssh.SshAuthFailed, ssh.SshError)
    assert not issubclass(ssh.SshError, TransientError)


def test_unusable_stored_keys_are_permanent_errors(ed25519_key):
    good_host = public_line(ed25519_key)
    with pytest.raises(ssh.SshError, match="pinned host key .* not usable"):
        ssh.connect(ssh.SshTarget("127.0.0.1", 9, "root", "nonsense", private_text(ed25519_key)), **TIMEOUTS)
    with pytest.raises(ssh.SshError, match="private key .* not usable: not a private key"):
        ssh.connect(ssh.SshTarget("127.0.0.1", 9, "root", good_host, "nonsense"), **TIMEOUTS)


# --- against a real sshd ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd():
    require(sshd_missing() is None, sshd_missing() or "")
    server = Sshd()
    yield server
    server.close()


@pytest.fixture
def own_sshd():
    """A server of its own, for tests that stop it or change its key."""
    require(sshd_missing() is None, sshd_missing() or "")
    server = Sshd()
    yield server
    server.close()


@pytest.fixture
def session(sshd):
    with ssh.connect(sshd.target(), **TIMEOUTS) as session:
        yield session


def test_run_returns_stdout_stderr_and_exit_status(session):
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = session.run(argv)
    assert result == ssh.CommandResult(shlex.join(argv), 3, "out\n", "err\n")
    assert not result.ok
    assert session.run(["true"]).ok  # the session serves many commands


def test_check_raises_with_the_end_of_stderr(session):
    with pytest.raises(ssh.SshError, match=r"^`sh -c .*` exited 2: the last line$") as raised:
        session.run(["sh", "-c", "echo first >&2; echo the last line >&2; exit 2"], check=True)
    assert not isinstance(raised.value, TransientError)
    assert session.run(["true"], check=True).ok


def test_stdin_reaches_the_command(session):
    assert session.run(["cat"], stdin="hello\nworld\n").stdout == "hello\nworld\n"
    data = os.urandom(MiB)
    assert session.run(["sha256sum"], stdin=data).stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert session.run(["cat"]).stdout == ""  # no stdin: the command sees end of input at once


def test_big_output_on_both_streams_and_big_input_do_not_deadlock(session):
    started = time.monotonic()
    # 4 MiB on stderr before any stdout: a client reading stdout to the end first would wait forever
    both = session.run(["sh", "-c", "head -c 4194304 /dev/zero | tr '\\0' e >&2; "
                                    "head -c 1048576 /dev/zero | tr '\\0' o"])
    assert both.stdout == "o" * MiB and both.stderr == "e" * (4 * MiB)
    # cat answers as it reads: a client that writes all input before reading blocks for good by 8 MiB
    text = "x" * (8 * MiB)
    assert session.run(["cat"], stdin=text).stdout == text
    assert time.monotonic() - started < 8


def test_arguments_are_passed_literally(session, tmp_path):
    marker = tmp_path / "injected"
    tricky = ["a b", "it's", '"double"', "$(id)", "`id`", f"; touch {marker}", f"$(touch {marker})", "*", "", "\\n"]
    result = session.run(["printf", "%s|", *tricky])
    assert result.stdout == "|".join(tricky) + "|"
    assert not marker.exists()
    with pytest.raises(TypeError):
        session.run(f"touch {marker}")  # a shell string is refused, not run


def test_a_wrong_pinned_host_key_is_refused_before_anything_runs(sshd, tmp_path, ed25519_key):
    marker = tmp_path / "ran"
    for impostor in (ed25519_key, ec.generate_private_key(ec.SECP256R1())):  # same type, and another type
        target = ssh.SshTarget(sshd.host, sshd.port, "root", public_line(impostor), sshd.client_private_key)
        with pytest.raises(ssh.HostKeyMismatch) as raised, ssh.connect(target, **TIMEOUTS) as session:
            session.run(["touch", str(marker)])
        message = str(raised.value)
        assert message.startswith(f"host key of 127.0.0.1:{sshd.port} does not match the pinned key (expected "
                                  f"{ssh.fingerprint(target.host_key)}, got ")
        assert ssh.fingerprint(sshd.host_key) in message
        assert not marker.exists()


def test_a_wrong_client_key_is_refused(sshd, ed25519_key):
    secret = private_text(ed25519_key)
    target = ssh.SshTarget(sshd.host, sshd.port, "root", sshd.host_key, secret)
    with pytest.raises(ssh.SshAuthFailed, match=f"127.0.0.1:{sshd.port} refused the login of 'root'") as raised:
        ssh.connect(target, **TIMEOUTS)
    assert "PRIVATE" not in str(raised.value) and secret.splitlines()[1] not in str(raised.value)


def test_rsa_and_ecdsa_client_keys_log_in(own_sshd):
    for key, form in ((rsa.generate_private_key(65537, 3072), serialization.PrivateFormat.TraditionalOpenSSL),
                      (ec.generate_private_key(ec.SECP256R1()), serialization.PrivateFormat.OpenSSH)):
        own_sshd.authorize(public_line(key))
        target = ssh.SshTarget(own_sshd.host, own_sshd.port, "root", own_sshd.host_key, private_text(key, form))
        with ssh.connect(target, **TIMEOUTS) as session:
            assert session.run(["echo", "in"]).stdout == "in\n"


def test_a_closed_port_is_unreachable_at_once(sshd):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = ssh.SshTarget("127.0.0.1", port, "root", sshd.host_key, sshd.client_private_key)
    started = time.monotonic()
    with pytest.raises(ssh.SshUnreachable, match=f"^cannot reach 127.0.0.1:{port}: connection refused$"):
        ssh.connect(target, **TIMEOUTS)
    assert time.monotonic() - started < 1


def test_a_server_that_never_speaks_ssh_is_unreachable_after_the_connect_timeout(sshd):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted = []
    thread = threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True)
    thread.start()
    target = ssh.SshTarget("127.0.0.1", silent.getsockname()[1], "root", sshd.host_key, sshd.client_private_key)
    started = time.monotonic()
    try:
        with pytest.raises(ssh.SshUnreachable, match=r"^cannot reach 127.0.0.1:\d+: (no SSH server answered|"
                                                     r"the SSH handshake did not complete)"):
            ssh.connect(target, connect_timeout=0.5, command_timeout=5)
        assert time.monotonic() - started < 3
    finally:
        thread.join(5)
        for sock in (*accepted, silent):
            sock.close()


def test_a_slow_command_times_out_and_the_session_stays_usable(sshd):
    with ssh.connect(sshd.target(), connect_timeout=5, command_timeout=1) as session:
        started = time.monotonic()
        with pytest.raises(ssh.CommandTimedOut, match=r"^`sleep 30` on 127.0.0.1:\d+ did not finish within 1 s$"):
            session.run(["sleep", "30"])
        assert time.monotonic() - started < 2.5
        with pytest.raises(ssh.CommandTimedOut, match="within 0.3 s"):
            session.run(["sleep", "30"], timeout=0.3)
        # a command that keeps talking is still held to its time limit
        with pytest.raises(ssh.CommandTimedOut):
            session.run(["sh", "-c", "while :; do echo tick; sleep 0.1; done"], timeout=0.8)
        assert session.run(["sleep", "1.5"], timeout=5).ok
        assert session.run(["echo", "still here"]).stdout == "still here\n"


def test_a_dropped_connection_is_unreachable_and_a_restarted_server_takes_the_same_key(own_sshd):
    session = ssh.connect(own_sshd.target(), **TIMEOUTS)
    try:
        assert session.run(["true"]).ok
        own_sshd.stop()
        with pytest.raises(ssh.SshUnreachable, match=f"lost the connection to 127.0.0.1:{own_sshd.port}"):
            session.run(["true"])
        with pytest.raises(ssh.SshUnreachable, match="connection refused"):
            ssh.connect(own_sshd.target(), **TIMEOUTS)
    finally:
        session.close()
    own_sshd.start()
    with ssh.connect(own_sshd.target(), **TIMEOUTS) as session:
        assert session.run(["true"]).ok


def test_a_connection_dropped_while_a_command_runs_is_unreachable(own_sshd):
    with ssh.connect(own_sshd.target(), **TIMEOUTS) as session:
        stopper = threading.Timer(0.5, own_sshd.stop)
        stopper.start()
        started = time.monotonic()
        with pytest.raises(ssh.SshUnreachable, match="lost the connection"):
            session.run(["sleep", "30"])
        assert time.monotonic() - started < 4
        stopper.join()


def test_a_replaced_host_key_is_a_mismatch(own_sshd):
    old = own_sshd.target()
    own_sshd.replace_host_key()
    assert own_sshd.host_key != old.host_key
    with pytest.raises(ssh.HostKeyMismatch):
        ssh.connect(old, **TIMEOUTS)
    with ssh.connect(own_sshd.target(), **TIMEOUTS) as session:
        assert session.run(["true"]).ok


def test_fingerprint_matches_ssh_keygen(sshd):
    listed = run(["ssh-keygen", "-lf", f"{sshd.host_key_file}.pub"]).stdout.split()
    assert ssh.fingerprint(sshd.host_key) == listed[1]
    assert listed[-1] == "(ED25519)"
