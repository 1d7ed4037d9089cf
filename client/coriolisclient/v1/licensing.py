"""The optional licensing service (catalog type ``coriolis-licensing``)."""

from __future__ import annotations

from typing import Any

import requests

from coriolisclient import base, exceptions


class _LicensingClient:
    def __init__(self, session: Any, verify: Any = True) -> None:
        self.session = session
        self.verify = verify

    def _url(self) -> str:
        return base.catalog_url(self.session, "coriolis-licensing",
                                exceptions.LicensingEndpointNotFound)

    def request(self, method: str, path: str, key: str, data: Any = None) -> Any:
        resp = requests.request(method, f"{self._url()}{path}", data=data, verify=self.verify,
                                timeout=60)
        if resp.status_code >= 400:
            try:
                error = resp.json()["error"]
                raise exceptions.HTTPError(error["message"], error.get("code"))
            except (ValueError, KeyError):
                resp.raise_for_status()
        return resp.json()[key] if key else resp


class LicensingServerManager(_LicensingClient):
    def status(self) -> dict[str, Any]:
        return self.request("GET", "/status", "status")


class LicensingManager(_LicensingClient):
    def list_appliances(self) -> list[dict[str, Any]]:
        return self.request("GET", "/appliances", "appliances")

    def get_appliance(self, appliance_id: str) -> dict[str, Any]:
        return self.request("GET", f"/appliances/{appliance_id}", "appliance")

    def create_appliance(self) -> dict[str, Any]:
        return self.request("POST", "/appliances", "appliance")

    def appliance_status(self, appliance_id: str) -> dict[str, Any]:
        return self.request("GET", f"/appliances/{appliance_id}/status",
                            "appliance_licence_status")

    def list_licences(self, appliance_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/appliances/{appliance_id}/licences", "licences")

    def register_licence(self, appliance_id: str, licence_pem: str) -> dict[str, Any]:
        return self.request("POST", f"/appliances/{appliance_id}/licences", "licence",
                            data=licence_pem)

    def show_licence(self, appliance_id: str, licence_id: str) -> dict[str, Any]:
        return self.request("GET", f"/appliances/{appliance_id}/licences/{licence_id}",
                            "licence")

    def delete_licence(self, appliance_id: str, licence_id: str) -> None:
        self.request("DELETE", f"/appliances/{appliance_id}/licences/{licence_id}", "")


class ReservationsManager(_LicensingClient):
    def list(self, appliance_id: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/appliances/{appliance_id}/reservations", "reservations")

    def show(self, appliance_id: str, reservation_id: str) -> dict[str, Any]:
        return self.request("GET", f"/appliances/{appliance_id}/reservations/{reservation_id}",
                            "reservation")

    def refresh(self, appliance_id: str, reservation_id: str) -> dict[str, Any]:
        return self.request("POST", f"/appliances/{appliance_id}/reservations/"
                                    f"{reservation_id}/refresh", "reservation")
