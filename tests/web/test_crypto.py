"""Tests for portal/crypto.py: WireGuard keys, preshared keys, the keyring, secrets at rest and `flask keys rotate`."""

from __future__ import annotations

import base64
import shutil
import subprocess
from contextlib import contextmanager

import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import func, select, text

from portal import create_app
from portal.crypto import (
    EncryptedText,
    Keyring,
    generate_keypair,
    generate_preshared_key,
    is_wireguard_key,
    public_key_for,
)
from portal.extensions import db
from portal.openvpn.models import OpenVpnServer, VpnClient
from portal.tenancy.models import User
from portal.wireguard.models import Hub, Router, VpnConfiguration
from tests.conftest import add_router
from tests.vectors import ENCRYPTION_KEY, OLD_ENCRYPTION_KEY, RFC7748_PRIVATE, RFC7748_PUBLIC

NEW_KEY = Fernet.generate_key().decode()


@contextmanager
def app_with_keys(keys: list[str]):
    """A second app on the same database whose keyring is `keys`; its engine is closed afterwards."""
    other = create_app({"ENCRYPTION_KEYS": keys})
    try:
        yield other
    finally:
        with other.app_context():
            db.engine.dispose()


def run_cli(app, *args: str):
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return result


def create_configuration(app, client, name: str) -> int:
    """Add a router through the browser flow; the id of its first configuration."""
    response = add_router(client, name)
    assert response.status_code == 303, response.get_data(as_text=True)
    router_id = int(response.headers["Location"].rsplit("/", 1)[1])
    with app.app_context():
        return db.session.get(Router, router_id).current_configuration.id


def read_secrets(app, configuration_id: int) -> tuple[str, str]:
    """The configuration's (private key, preshared key) as `app` decrypts them."""
    with app.app_context():
        configuration = db.session.get(VpnConfiguration, configuration_id)
        return configuration.private_key, configuration.preshared_key


def raw_column(app, column: str, configuration_id: int) -> str:
    with app.app_context():
        return db.session.execute(text(f"SELECT {column} FROM vpn_configurations WHERE id = :id"),
                                  {"id": configuration_id}).scalar_one()


SECRET_COLUMNS = (
    VpnConfiguration.private_key, VpnConfiguration.preshared_key, VpnConfiguration.next_private_key,
    VpnConfiguration.next_preshared_key, Hub.private_key, Hub.ssh_private_key, OpenVpnServer.ssh_private_key,
    VpnClient.bundle, User.totp_secret, Router.api_password,
)


def count_secrets(app) -> int:
    with app.app_context():
        return sum(db.session.scalar(select(func.count()).where(column.is_not(None))) for column in SECRET_COLUMNS)


def test_every_encrypted_column_is_one_the_rotation_test_counts():
    encrypted = {f"{table.name}.{column.name}" for table in db.metadata.sorted_tables for column in table.columns
                 if isinstance(column.type, EncryptedText)}
    assert encrypted == {f"{column.table.name}.{column.name}" for column in SECRET_COLUMNS}


# WireGuard keys -----------------------------------------------------------------------------------

def test_generated_keypair_public_key_matches_its_private_key():
    keys = generate_keypair()
    assert is_wireguard_key(keys.private) and is_wireguard_key(keys.public)
    assert public_key_for(keys.private) == keys.public
    assert generate_keypair().private != keys.private


def test_public_key_of_the_rfc7748_vector():
    assert public_key_for(RFC7748_PRIVATE) == RFC7748_PUBLIC


@pytest.mark.skipif(shutil.which("wg") is None, reason="the `wg` binary (wireguard-tools) is not installed")
@pytest.mark.parametrize("private_key", [RFC7748_PRIVATE, generate_keypair().private, generate_keypair().private])
def test_public_key_matches_wg_pubkey(private_key):
    wg = subprocess.run(["wg", "pubkey"], input=private_key + "\n", capture_output=True, text=True, check=True,
                        timeout=10)
    assert wg.stdout.strip() == public_key_for(private_key)


def test_preshared_keys_are_32_random_bytes_in_base64():
    keys = [generate_preshared_key() for _ in range(50)]
    assert all(len(base64.b64decode(key, validate=True)) == 32 for key in keys)
    assert all(is_wireguard_key(key) for key in keys)
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("bad", [
    "",
    "not a key",
    base64.b64encode(b"\x01" * 31).decode(),
    base64.b64encode(b"\x01" * 33).decode(),
    RFC7748_PUBLIC.rstrip("="),  # padding missing
    RFC7748_PUBLIC + "\n",
    " " + RFC7748_PUBLIC,
    base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode(),  # URL-safe alphabet, not WireGuard's
    "é" * 44,
])
def test_is_wireguard_key_rejects_bad_input(bad):
    assert not is_wireguard_key(bad)
    with pytest.raises(ValueError):
        public_key_for(bad)


# Keyring --------------------------------------------------------------------------------------------

def test_keyring_needs_a_key():
    with pytest.raises(ValueError):
        Keyring([])


def test_first_key_encrypts_and_every_key_decrypts():
    old_only = Keyring([OLD_ENCRYPTION_KEY])
    both = Keyring([NEW_KEY, OLD_ENCRYPTION_KEY])
    new_only = Keyring([NEW_KEY])

    old_token = old_only.encrypt("secret one")
    assert old_token != "secret one"
    assert both.decrypt(old_token) == "secret one"
    with pytest.raises(InvalidToken):
        new_only.decrypt(old_token)

    new_token = both.encrypt("secret two")
    assert new_only.decrypt(new_token) == "secret two"
    with pytest.raises(InvalidToken):
        old_only.decrypt(new_token)


def test_rotate_re_encrypts_under_the_first_key():
    token = Keyring([OLD_ENCRYPTION_KEY]).encrypt("wg private key")
    rotated = Keyring([NEW_KEY, OLD_ENCRYPTION_KEY]).rotate(token)
    assert rotated != token
    assert Keyring([NEW_KEY]).decrypt(rotated) == "wg private key"
    with pytest.raises(InvalidToken):
        Keyring([OLD_ENCRYPTION_KEY]).decrypt(rotated)


# Secrets at rest ------------------------------------------------------------------------------------

def test_configuration_keys_are_stored_as_fernet_tokens(app, admin_client):
    configuration_id = create_configuration(app, admin_client, "Encrypted")
    private_key, preshared_key = read_secrets(app, configuration_id)
    assert is_wireguard_key(private_key) and is_wireguard_key(preshared_key)
    keyring = Keyring([ENCRYPTION_KEY])
    for column, plaintext in (("private_key", private_key), ("preshared_key", preshared_key)):
        stored = raw_column(app, column, configuration_id)
        assert plaintext not in stored
        assert keyring.decrypt(stored) == plaintext
    with app.app_context():
        configuration = db.session.get(VpnConfiguration, configuration_id)
        assert public_key_for(private_key) == configuration.public_key


def test_keys_rotate_command_re_encrypts_every_secret(app, admin_client):
    configuration_id = create_configuration(app, admin_client, "Rotated")
    secrets = read_secrets(app, configuration_id)
    stored_before = raw_column(app, "private_key", configuration_id)
    total = count_secrets(app)
    try:
        with app_with_keys([NEW_KEY, ENCRYPTION_KEY]) as rotating:
            result = run_cli(rotating, "keys", "rotate")
        assert f"re-encrypted {total} secrets" in result.output
        assert raw_column(app, "private_key", configuration_id) != stored_before
        with app_with_keys([NEW_KEY]) as new_only:
            assert read_secrets(new_only, configuration_id) == secrets
        with pytest.raises(InvalidToken):
            read_secrets(app, configuration_id)  # the session app only knows the old key
    finally:
        # The test database is shared: put every secret back under the session key.
        with app_with_keys([ENCRYPTION_KEY, NEW_KEY]) as rotating_back:
            run_cli(rotating_back, "keys", "rotate")
    assert read_secrets(app, configuration_id) == secrets
