"""AES-GCM encryption of JSON values with a key kept in a file of the data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_VERSION = b"\x01"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """Load the key, creating it (mode 0600) on first use."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(AESGCM.generate_key(bit_length=256))
        return cls(path.read_bytes())

    def encrypt_json(self, value: Any) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plaintext = json.dumps(value).encode()
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, _VERSION)

    def decrypt_json(self, blob: bytes) -> Any:
        version, nonce, ciphertext = blob[:1], blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:]
        if version != _VERSION:
            raise ValueError("unknown encrypted value version")
        return json.loads(self._aead.decrypt(nonce, ciphertext, version))
