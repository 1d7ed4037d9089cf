"""Bodies of the embedded Keystone subset (POST /identity/v3/auth/tokens and /v2.0/tokens),
as keystoneauth1 sends them. Keys this subset does not read (domains, ``unscoped``, ...) are
ignored, as Keystone ignores what it does not need; the keys it reads are typed."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from coriolis.api.schemas.common import Body, Id, Name

Secret = Annotated[str, Field(max_length=4096)]


class _Keystone(Body):
    model_config = ConfigDict(extra="ignore", strict=True)


class V3User(_Keystone):
    id: Id | None = None
    name: Name | None = None
    password: Secret


class V3Password(_Keystone):
    user: V3User


class V3Token(_Keystone):
    id: Secret


class V3Identity(_Keystone):
    methods: Annotated[list[Name], Field(min_length=1, max_length=8)]
    password: V3Password | None = None
    token: V3Token | None = None


class V3Project(_Keystone):
    id: Id | None = None
    name: Name | None = None


class V3Scope(_Keystone):
    project: V3Project | None = None


class V3Auth(_Keystone):
    identity: V3Identity
    scope: V3Scope | None = None


class V3AuthRequest(_Keystone):
    auth: V3Auth


class V2Credentials(_Keystone):
    username: Name | None = None
    userId: Id | None = None  # noqa: N815 - the wire name
    password: Secret


class V2Auth(_Keystone):
    tenantName: Name | None = None  # noqa: N815
    tenantId: Id | None = None  # noqa: N815
    passwordCredentials: V2Credentials | None = None  # noqa: N815
    token: V3Token | None = None


class V2AuthRequest(_Keystone):
    auth: V2Auth
