"""The coriolis-logger service (catalog type ``coriolis-logger``), if the deployment has one."""

from __future__ import annotations

from typing import Any

import requests

from coriolisclient import base, exceptions


class LoggingManager:
    def __init__(self, session: Any, verify: Any = True) -> None:
        self.session = session
        self.verify = verify

    def _url(self) -> str:
        return base.catalog_url(self.session, "coriolis-logger", exceptions.LoggingEndpointNotFound)

    def _headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.session.get_token()}

    def list_logs(self) -> list[dict[str, Any]]:
        resp = requests.get(f"{self._url()}/logs/", headers=self._headers(), verify=self.verify,
                            timeout=60)
        resp.raise_for_status()
        return resp.json()["logs"]

    def download_logs(self, app: str, to: str, start_time: int | None = None,
                      end_time: int | None = None) -> None:
        params = {k: v for k, v in (("start_date", start_time), ("end_date", end_time)) if v}
        with requests.get(f"{self._url()}/logs/{app}/", headers=self._headers(), params=params,
                          verify=self.verify, stream=True, timeout=60) as resp:
            resp.raise_for_status()
            with open(to, "wb") as f:
                for chunk in resp.iter_content(1 << 16):
                    f.write(chunk)
