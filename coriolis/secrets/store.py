"""The embedded secret store (a Barbican-v1 subset) and the resolution of ``secret_ref``
connection info. Payloads are encrypted at rest like connection info; a reference resolves
only inside the project that stored the secret."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from coriolis import exceptions
from coriolis.db import models
from coriolis.secrets.box import SecretBox


def secret_id(ref: str) -> str:
    """The id in a secret reference (``.../v1/secrets/<id>`` or the bare id)."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


def store(session: Session, box: SecretBox, project_id: str, payload: str,
          content_type: str = "text/plain", name: str | None = None) -> models.Secret:
    secret = models.Secret(project_id=project_id, name=name, content_type=content_type,
                           payload_encrypted=box.encrypt_json(payload))
    session.add(secret)
    session.flush()
    return secret


def get(session: Session, project_id: str, ref: str) -> models.Secret:
    secret = session.get(models.Secret, secret_id(ref))
    if secret is None or secret.project_id != project_id:
        raise exceptions.NotFound(f"Secret {ref} could not be found")
    return secret


def payload(box: SecretBox, secret: models.Secret) -> str:
    return box.decrypt_json(secret.payload_encrypted)


def connection_info(session: Session, box: SecretBox, project_id: str,
                    stored: dict[str, Any]) -> dict[str, Any]:
    """Connection info as stored, or, for ``{"secret_ref": REF}``, the JSON object the
    referenced secret holds (``InvalidInput`` naming the reference otherwise)."""
    ref = stored.get("secret_ref") if isinstance(stored, dict) else None
    if ref is None:
        return stored
    try:
        secret = get(session, project_id, ref)
    except exceptions.NotFound:
        raise missing_secret(ref) from None
    return connection_object(ref, payload(box, secret))


def missing_secret(ref: str) -> exceptions.InvalidInput:
    return exceptions.InvalidInput(
        f"connection_info.secret_ref: secret {ref} does not exist in this project")


def connection_object(ref: str, text: str) -> dict[str, Any]:
    """The JSON object a secret's payload holds (``InvalidInput`` naming ``ref`` if not)."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise exceptions.InvalidInput(
            f"connection_info.secret_ref: secret {ref} does not hold a JSON object")
    return value
