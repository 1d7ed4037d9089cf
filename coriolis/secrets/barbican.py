"""Connection info kept in a real Barbican (``[barbican] url = ...`` with ``[keystone]``).

When a user creates an endpoint with ``{"secret_ref": HREF}``, the API reads the secret with
the user's own token (so it must exist in the user's project: 400 naming the reference
otherwise) and the user delegates their project roles to the Coriolis service user through a
Keystone trust. Tasks that run hours later read the secret through that trust, as upstream
Coriolis does; deleting the endpoint deletes the trust. Only references under the configured
Barbican URL are followed: the server never sends a user's token anywhere else.
"""

from __future__ import annotations

from typing import Any

import requests

from coriolis import exceptions
from coriolis.config import ConfigError
from coriolis.context import RequestContext
from coriolis.identity.external import service_session
from coriolis.secrets.store import connection_object, missing_secret

TIMEOUT = 30


class BarbicanSecrets:
    def __init__(self, barbican: dict[str, str], keystone: dict[str, str]) -> None:
        if "url" not in barbican:
            raise ConfigError("[barbican] needs url (the Barbican API, e.g. http://host:9311)")
        self.url = barbican["url"].rstrip("/")
        self.keystone = keystone
        self._service_user_id: str | None = None

    def _check_ref(self, ref: str) -> None:
        if not ref.startswith(f"{self.url}/v1/secrets/"):
            raise exceptions.InvalidInput(
                f"connection_info.secret_ref: {ref} is not a secret of the Barbican at "
                f"{self.url}")

    def _payload(self, ref: str, headers: dict[str, str] | None = None,
                 session: Any = None) -> dict[str, Any]:
        accept = {"Accept": "text/plain"}
        if session is not None:
            resp = session.get(f"{ref}/payload", headers=accept, raise_exc=False,
                               timeout=TIMEOUT)
        else:
            resp = requests.get(f"{ref}/payload", headers={**accept, **(headers or {})},
                                timeout=TIMEOUT)
        if resp.status_code in (403, 404):
            raise missing_secret(ref)
        if resp.status_code != 200:
            raise exceptions.ProviderError(
                f"Barbican answered {resp.status_code} for secret {ref}")
        return connection_object(ref, resp.text)

    def _service_user(self) -> str:
        if self._service_user_id is None:
            self._service_user_id = service_session(self.keystone).get_user_id()
        assert self._service_user_id is not None
        return self._service_user_id

    def prepare(self, ctx: RequestContext, ref: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(what to store, the connection info) for a reference given by ``ctx``'s user."""
        self._check_ref(ref)
        if not ctx.auth_token:
            raise exceptions.Unauthorized("A token is needed to read the secret")
        value = self._payload(ref, {"X-Auth-Token": ctx.auth_token})
        resp = requests.post(
            f"{self.keystone['auth_url'].rstrip('/')}/OS-TRUST/trusts", timeout=TIMEOUT,
            headers={"X-Auth-Token": ctx.auth_token},
            json={"trust": {"trustor_user_id": ctx.user_id,
                            "trustee_user_id": self._service_user(),
                            "project_id": ctx.project_id, "impersonation": True,
                            "roles": [{"name": r} for r in ctx.roles]}})
        if resp.status_code != 201:
            raise exceptions.ProviderError(
                f"Keystone refused the trust Coriolis needs to read {ref} later "
                f"({resp.status_code})")
        return {"secret_ref": ref, "trust_id": resp.json()["trust"]["id"]}, value

    def resolve(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The connection info, read through the trust (no user token needed)."""
        self._check_ref(stored["secret_ref"])
        session = service_session(self.keystone, trust_id=stored["trust_id"])
        return self._payload(stored["secret_ref"], session=session)

    def release(self, ctx: RequestContext, stored: dict[str, Any]) -> None:
        """Delete the trust of an endpoint that goes away (best effort)."""
        if stored.get("trust_id") and ctx.auth_token:
            requests.delete(
                f"{self.keystone['auth_url'].rstrip('/')}/OS-TRUST/trusts/{stored['trust_id']}",
                headers={"X-Auth-Token": ctx.auth_token}, timeout=TIMEOUT)
