"""Who holds a token: the embedded identity's tokens, checked against revocations, or a real
Keystone's (``identity.external``). The API only sees ``TokenValidator``."""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

from sqlalchemy import delete, exists, select

from coriolis import exceptions
from coriolis.db import models
from coriolis.db.session import Database
from coriolis.identity.tokens import TokenData, TokenIssuer


class TokenValidator(Protocol):
    def validate(self, token: str | None) -> TokenData:
        """The token's holder, project and roles; ``Unauthorized`` (401) otherwise."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EmbeddedValidator:
    """Signed tokens of the embedded identity, rejected once revoked: one by one
    (``revoke``), or all of a user's when their password, enabled flag or roles change."""

    def __init__(self, issuer: TokenIssuer, db: Database) -> None:
        self.issuer = issuer
        self.db = db

    def validate(self, token: str | None) -> TokenData:
        data = self.issuer.validate(token)
        assert token is not None
        # One query, no ORM objects: every request pays for it (revocations stay immediate).
        revoked = exists().where(models.RevokedToken.token_hash == token_hash(token))
        with self.db.reader() as session:
            user = session.execute(select(
                models.User.enabled, models.User.tokens_valid_after, revoked
            ).where(models.User.id == data.user_id)).first()
        if user is None or not user[0]:
            raise exceptions.Unauthorized("The token's user is disabled or was deleted")
        if (user[1] is not None and data.issued_at < user[1]) or user[2]:
            raise exceptions.Unauthorized("The token has been revoked")
        return data

    def revoke(self, token: str) -> None:
        data = self.validate(token)
        with self.db.session() as session:
            session.execute(delete(models.RevokedToken).where(
                models.RevokedToken.expires_at < time.time()))
            session.merge(models.RevokedToken(token_hash=token_hash(token),
                                              expires_at=data.expires_at))
