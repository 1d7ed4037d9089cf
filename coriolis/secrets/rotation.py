"""Key rotation: a new primary key, every stored value re-encrypted with it, old keys dropped
once no value uses them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from coriolis.db import models
from coriolis.db.session import Database
from coriolis.secrets.box import SecretBox

# (model, column) of every encrypted value.
ENCRYPTED_COLUMNS: tuple[tuple[Any, str], ...] = (
    (models.Endpoint, "connection_info_encrypted"),
    (models.Secret, "payload_encrypted"),
)
# How long processes that encrypted with the old primary just before the rotation have to
# commit, before the rotation re-encrypts and counts what uses each key.
GRACE_SECONDS = 2.0


@dataclass
class RotationReport:
    new_key: str
    reencrypted: int
    dropped: list[str]
    kept: dict[str, int]


def _values(session: Session) -> Iterator[tuple[Any, str]]:
    for model, column in ENCRYPTED_COLUMNS:
        for row in session.scalars(select(model).with_for_update()):
            yield row, column


def usage(db: Database, box: SecretBox) -> Counter[str]:
    """How many stored values each key encrypts."""
    with db.session() as session:
        return Counter(box.key_of(getattr(row, column)) for row, column in _values(session))


def rotate(db: Database, box: SecretBox, *, drop_old: bool = True,
           grace: float = GRACE_SECONDS) -> RotationReport:
    new_key = box.ring.add_primary()
    time.sleep(grace)
    count = 0
    with db.session() as session:
        for row, column in _values(session):
            blob = getattr(row, column)
            if box.key_of(blob) != new_key:
                setattr(row, column, box.encrypt_json(box.decrypt_json(blob)))
                count += 1
    used = usage(db, box)
    dropped = box.ring.retire(set(used)) if drop_old else []
    return RotationReport(new_key, count, dropped, dict(used))
