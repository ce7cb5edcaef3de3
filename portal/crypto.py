"""WireGuard keys, preshared keys, and the encrypted column type with key rotation.

Secrets at rest are Fernet tokens under a key list (MultiFernet): the first key encrypts, every key
decrypts, and `flask keys rotate` re-encrypts every secret under the first key.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import NamedTuple

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from flask import current_app
from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

KEY_BYTES = 32
KEYRING_EXTENSION = "portal.keyring"


class KeyPair(NamedTuple):
    private: str
    public: str


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def generate_keypair() -> KeyPair:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return KeyPair(_b64(raw), _b64(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)))


def public_key_for(private_key: str) -> str:
    """The public key of a base64 private key, as `wg pubkey` prints it (clamping included)."""
    private = X25519PrivateKey.from_private_bytes(decode_key(private_key))
    return _b64(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_preshared_key() -> str:
    return _b64(os.urandom(KEY_BYTES))


def decode_key(key: str) -> bytes:
    """The 32 bytes of a WireGuard base64 key; ValueError for anything else."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueError("not base64") from error
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a WireGuard key is {KEY_BYTES} bytes, this one is {len(raw)}")
    return raw


def is_wireguard_key(key: str) -> bool:
    try:
        decode_key(key)
    except ValueError:
        return False
    return True


class Keyring:
    """The encryption keys: the first encrypts, all decrypt."""

    def __init__(self, keys: list[str]):
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as error:
            raise InvalidToken("a secret could not be decrypted with any configured key") from error

    def rotate(self, token: str) -> str:
        """The same secret encrypted under the first key."""
        return self._fernet.rotate(token.encode("ascii")).decode("ascii")


def current_keyring() -> Keyring:
    return current_app.extensions[KEYRING_EXTENSION]


class EncryptedText(TypeDecorator):
    """A text column stored as a Fernet token; Python sees the plaintext."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else current_keyring().encrypt(value)

    def process_result_value(self, value, dialect):
        return None if value is None else current_keyring().decrypt(value)
