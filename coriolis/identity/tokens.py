"""Signed, expiring tokens (Fernet), carrying who the bearer is and in which project."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from coriolis import exceptions


@dataclass(frozen=True)
class TokenData:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float


class TokenIssuer:
    def __init__(self, key_file: Path, ttl_seconds: int) -> None:
        if not key_file.exists():
            key_file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        self._fernet = Fernet(key_file.read_bytes().strip())
        self.ttl = ttl_seconds

    def issue(self, user_id: str, user_name: str, project_id: str, project_name: str,
              roles: list[str]) -> tuple[str, TokenData]:
        now = time.time()
        data = TokenData(user_id, user_name, project_id, project_name, tuple(roles), now,
                         now + self.ttl)
        payload = json.dumps({"u": user_id, "un": user_name, "p": project_id,
                              "pn": project_name, "r": roles, "i": now, "e": data.expires_at})
        return self._fernet.encrypt(payload.encode()).decode(), data

    def validate(self, token: str | None) -> TokenData:
        if not token:
            raise exceptions.Unauthorized("Authentication required: no X-Auth-Token given")
        try:
            raw = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            raise exceptions.Unauthorized("The token is invalid") from None
        if raw["e"] < time.time():
            raise exceptions.Unauthorized("The token has expired")
        return TokenData(raw["u"], raw["un"], raw["p"], raw["pn"], tuple(raw["r"]), raw["i"],
                         raw["e"])
