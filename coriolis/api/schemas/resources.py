"""Bodies of endpoints, regions, services, minion pools and secrets
(shared/reference/coriolis-v1-api.md §3.1, §3.5; the Barbican v1 subset)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from coriolis.api.schemas.common import ABSENT, Body, Description, Id, JsonObject, Name, Script
from coriolis.api.schemas.transfers import OsType

RegionIds = Annotated[list[Id], Field(max_length=1000)]


class EndpointUpdate(Body):
    """``connection_info``: the provider's connection object (checked against its schema),
    or ``{"secret_ref": "<URL>"}``; ``mapped_regions``: region ids."""

    name: Name = ABSENT
    description: Description | None = None
    connection_info: JsonObject = ABSENT
    mapped_regions: RegionIds | None = None


class EndpointCreate(EndpointUpdate):
    name: Name
    type: Name
    connection_info: JsonObject


class EndpointRequest(Body):
    endpoint: EndpointCreate


class EndpointUpdateRequest(Body):
    endpoint: EndpointUpdate


class EndpointAction(Body):
    """``{"validate-connection": null}``."""

    validate_connection: JsonObject | None = Field(alias="validate-connection")


class RegionUpdate(Body):
    name: Name = ABSENT
    description: Description | None = None
    enabled: bool = ABSENT


class RegionCreate(RegionUpdate):
    name: Name


class RegionRequest(Body):
    region: RegionCreate


class RegionUpdateRequest(Body):
    region: RegionUpdate


class ServiceUpdate(Body):
    enabled: bool = ABSENT
    mapped_regions: RegionIds | None = None


class ServiceCreate(ServiceUpdate):
    host: Name
    binary: Name
    topic: Name


class ServiceRequest(Body):
    service: ServiceCreate


class ServiceUpdateRequest(Body):
    service: ServiceUpdate


class MinionPoolCreate(Body):
    """A pool of helper machines; ``minion_max_idle_time`` in seconds."""

    name: Name
    endpoint_id: Id
    platform: Literal["source", "destination"]
    os_type: OsType
    environment_options: JsonObject
    minimum_minions: Annotated[int, Field(ge=1, le=1000)] | None = None
    maximum_minions: Annotated[int, Field(ge=1, le=1000)] | None = None
    minion_max_idle_time: Annotated[int, Field(ge=1)] | None = None
    minion_retention_strategy: Literal["delete", "poweroff"] | None = None
    notes: Description | None = None
    skip_allocation: bool | None = None


class MinionPoolRequest(Body):
    minion_pool: MinionPoolCreate


class MinionPoolUpdate(Body):
    """What may change while the pool is DEALLOCATED (endpoint and platform never)."""

    name: Name = ABSENT
    os_type: OsType = ABSENT
    environment_options: JsonObject = ABSENT
    minimum_minions: Annotated[int, Field(ge=1, le=1000)] = ABSENT
    maximum_minions: Annotated[int, Field(ge=1, le=1000)] = ABSENT
    minion_max_idle_time: Annotated[int, Field(ge=1)] = ABSENT
    minion_retention_strategy: Literal["delete", "poweroff"] = ABSENT
    notes: Description | None = None


class MinionPoolUpdateRequest(Body):
    minion_pool: MinionPoolUpdate


class PoolDeallocateOptions(Body):
    force: bool = False


class MinionPoolAction(Body):
    """Exactly one of ``{"allocate": null}``, ``{"refresh": null}``, ``{"deallocate":
    {"force": bool} | null}``."""

    allocate: JsonObject | None = None
    refresh: JsonObject | None = None
    deallocate: PoolDeallocateOptions | None = None


class SecretCreate(Body):
    """POST /key-manager/v1/secrets as python-barbicanclient sends it; the fields this store
    does not use are accepted and ignored, as Barbican's own optional ones."""

    model_config = ConfigDict(extra="ignore")

    payload: Annotated[Script, Field(min_length=1)]
    payload_content_type: Description | None = None
    name: Description | None = None
