"""AES-GCM encryption of JSON values with keys kept in a key ring file of the data directory.

The key ring (``secret.keys``, mode 0600) holds every key still in use and names the primary
one, which encrypts new values. Each value records the id of the key that encrypted it, so a
rotation (``coriolis-server keys rotate``) adds a new primary, re-encrypts every stored value
with it, and drops old keys only once no value uses them. A process that meets a key id it
does not know re-reads the ring, and it picks up a new primary when the file changes, so
servers keep running through a rotation.

Formats: version 2 values are ``0x02 | key id (4) | nonce (12) | ciphertext+tag``, with the
first five bytes as associated data. Version 1 values (``0x01 | nonce | ciphertext``) and
the single-key file ``secret.key`` of earlier releases are still read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_V1, _V2 = b"\x01", b"\x02"
_KID_BYTES = 4


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:2 * _KID_BYTES]


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class KeyRing:
    """The key ring file: ``{"primary": KID, "keys": {KID: base64 key}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[str, dict[str, bytes]]:
        if not self.path.exists():
            self._create()
        doc = json.loads(self.path.read_text())
        keys = {kid: base64.b64decode(k) for kid, k in doc["keys"].items()}
        if doc["primary"] not in keys or any(len(k) != 32 for k in keys.values()):
            raise ValueError(f"{self.path}: malformed key ring")
        return doc["primary"], keys

    def save(self, primary: str, keys: dict[str, bytes]) -> None:
        doc = {"primary": primary,
               "keys": {kid: base64.b64encode(k).decode() for kid, k in keys.items()}}
        _write_private(self.path, json.dumps(doc, indent=1).encode())

    def _create(self) -> None:
        """A new ring: from the single key file of earlier releases if there is one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        legacy = self.path.with_name("secret.key")
        key = legacy.read_bytes() if legacy.exists() else AESGCM.generate_key(bit_length=256)
        self.save(key_id(key), {key_id(key): key})
        legacy.unlink(missing_ok=True)

    def add_primary(self) -> str:
        primary, keys = self.load()
        key = AESGCM.generate_key(bit_length=256)
        keys[key_id(key)] = key
        self.save(key_id(key), keys)
        return key_id(key)

    def retire(self, keep: set[str]) -> list[str]:
        """Drop every key but the primary and ``keep``; returns the dropped ids."""
        primary, keys = self.load()
        dropped = [kid for kid in keys if kid != primary and kid not in keep]
        self.save(primary, {kid: k for kid, k in keys.items() if kid not in dropped})
        return dropped


class SecretBox:
    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._primary = ""
        self._keys: dict[str, AESGCM] = {}
        self._reload()

    @classmethod
    def from_key_file(cls, path: Path) -> SecretBox:
        """The box of a key ring file, created (mode 0600) on first use."""
        return cls(KeyRing(path))

    def _reload(self) -> None:
        with self._lock:
            primary, keys = self.ring.load()
            stat = self.ring.path.stat()
            self._stamp = (stat.st_mtime_ns, stat.st_ino)
            self._primary = primary
            self._keys = {kid: AESGCM(k) for kid, k in keys.items()}

    def _fresh(self) -> None:
        stat = self.ring.path.stat()
        if (stat.st_mtime_ns, stat.st_ino) != self._stamp:
            self._reload()

    @property
    def primary(self) -> str:
        self._fresh()
        return self._primary

    def encrypt_json(self, value: Any) -> bytes:
        self._fresh()
        kid = self._primary
        header = _V2 + bytes.fromhex(kid)
        nonce = os.urandom(_NONCE_BYTES)
        return header + nonce + self._keys[kid].encrypt(nonce, json.dumps(value).encode(), header)

    def key_of(self, blob: bytes) -> str:
        """The id of the key that encrypted ``blob`` ("v1" for the first format)."""
        return blob[1:1 + _KID_BYTES].hex() if blob[:1] == _V2 else "v1"

    def decrypt_json(self, blob: bytes) -> Any:
        version = blob[:1]
        if version == _V1:
            nonce, ciphertext, aad = blob[1:1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES:], _V1
            candidates = list(self._keys.values())
        elif version == _V2:
            header, rest = blob[:1 + _KID_BYTES], blob[1 + _KID_BYTES:]
            kid = header[1:].hex()
            if kid not in self._keys:
                self._reload()
            if kid not in self._keys:
                raise ValueError(f"the key {kid} that encrypted this value is not in "
                                 f"{self.ring.path}")
            nonce, ciphertext, aad = rest[:_NONCE_BYTES], rest[_NONCE_BYTES:], header
            candidates = [self._keys[kid]]
        else:
            raise ValueError("unknown encrypted value version")
        for aead in candidates:
            try:
                return json.loads(aead.decrypt(nonce, ciphertext, aad))
            except Exception:  # InvalidTag: try the next key of a version 1 value
                continue
        raise ValueError("no key of the key ring decrypts this value")
