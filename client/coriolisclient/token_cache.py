"""Keystone tokens kept between ``coriolis`` invocations, so that a command costs one API
request instead of a login (``POST /identity/v3/auth/tokens``) and the request.

A token is stored as keystoneauth1's own auth state (``get_auth_state()``: the token id and
the token body Keystone returned: user, project, roles, catalog, expiry; never a password) in
``$XDG_CACHE_HOME/coriolis/tokens/<key>.json`` (default ``~/.cache/coriolis/tokens``), the
directory mode 0700 and the file 0600, written atomically. ``<key>`` is the SHA-256 of
keystoneauth1's cache id of the login (``get_cache_id()``, itself a SHA-256 over the identity
URL, the user, the project and the credential), so each login has its own file and a changed
or mistyped password never reuses a token.

keystoneauth1 logs in again by itself when the token expires within two minutes, and on a
401 (a revoked token, a server restarted with another key) it drops the token, logs in again
and retries the request once; the new token then replaces the stored one.

``CORIOLIS_TOKEN_CACHE=0`` (or ``--no-token-cache``) turns the cache off;
``CORIOLIS_TOKEN_CACHE_DIR`` names another directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def enabled() -> bool:
    """False when ``CORIOLIS_TOKEN_CACHE`` is ``0``, ``no``, ``false`` or ``off``."""
    return os.environ.get("CORIOLIS_TOKEN_CACHE", "1").lower() not in ("0", "no", "false",
                                                                       "off")


def cache_dir() -> Path:
    """``CORIOLIS_TOKEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/coriolis/tokens``, else
    ``~/.cache/coriolis/tokens``."""
    explicit = os.environ.get("CORIOLIS_TOKEN_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coriolis" / "tokens"


class TokenCache:
    """One login's stored token. ``load`` installs it into a keystoneauth1 identity plugin;
    ``save`` stores the plugin's current token when it changed."""

    def __init__(self, key: str, directory: Path | None = None) -> None:
        self.path = (directory or cache_dir()) / f"{key}.json"
        self._loaded: str | None = None

    @classmethod
    def for_plugin(cls, plugin: Any, directory: Path | None = None) -> TokenCache | None:
        """The cache of ``plugin``'s login, or None when the plugin has no cache id. The
        file is named by the SHA-256 of that id in hex (the id is base64, which may hold
        ``/``)."""
        cache_id = plugin.get_cache_id()
        if not cache_id:
            return None
        return cls(hashlib.sha256(cache_id.encode()).hexdigest(), directory)

    def load(self, plugin: Any) -> bool:
        """Install the stored token into ``plugin``; False when there is none usable (a
        missing, foreign-owned, group/world-readable or unreadable file is ignored)."""
        try:
            st = self.path.stat()
            if st.st_uid != os.getuid() or st.st_mode & 0o077:
                return False
            state = self.path.read_text()
            json.loads(state)["auth_token"]
            plugin.set_auth_state(state)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self._loaded = plugin.auth_ref.auth_token if plugin.auth_ref else None
        return self._loaded is not None

    def save(self, plugin: Any) -> None:
        """Store ``plugin``'s token if it has one other than the loaded one; errors (a
        read-only home, say) are ignored: the cache only saves time."""
        ref = getattr(plugin, "auth_ref", None)
        if ref is None or ref.auth_token == self._loaded:
            return
        with contextlib.suppress(OSError):
            self._write(plugin.get_auth_state())
            self._loaded = ref.auth_token

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _write(self, state: str) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".token-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp creates it 0600
                f.write(state)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
