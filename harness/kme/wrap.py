"""Wrapping a device key under the device's pre-shared key (the ``psk_wrap`` wireless transport).

AES-256-GCM with a fresh 96-bit nonce; the associated data binds the ciphertext to the device id,
the key_ID and a challenge the device sent with its request, so a recorded answer cannot be
replayed to the device later nor served to another device.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12  # GCM's standard 96-bit nonce (NIST SP 800-38D)
CHALLENGE_BYTES = 16


class UnwrapError(ValueError):
    """The wrapped key failed authentication (wrong PSK, altered, or for another request)."""


def _aad(device_id: str, key_id: str, challenge: bytes) -> bytes:
    return b"qiot-wrap-v1|" + device_id.encode() + b"|" + key_id.encode() + b"|" + challenge


def wrap_key(psk: bytes, device_id: str, key_id: str, challenge: bytes, key: bytes) -> tuple[bytes, bytes]:
    """Return (nonce, ciphertext+tag) of ``key`` under ``psk``."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(psk).encrypt(nonce, key, _aad(device_id, key_id, challenge))


def unwrap_key(psk: bytes, device_id: str, key_id: str, challenge: bytes, nonce: bytes, wrapped: bytes) -> bytes:
    """Inverse of :func:`wrap_key`; raise :class:`UnwrapError` if authentication fails."""
    try:
        return AESGCM(psk).decrypt(nonce, wrapped, _aad(device_id, key_id, challenge))
    except (InvalidTag, ValueError):
        raise UnwrapError(f"wrapped key for {device_id} did not authenticate") from None
