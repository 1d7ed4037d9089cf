"""Who is calling: the X-Auth-Token, checked against the project in the path."""

from __future__ import annotations

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from coriolis import exceptions
from coriolis.api.ownership import check_owned
from coriolis.context import RequestContext
from coriolis.db.session import Database
from coriolis.identity.validation import TokenValidator

# Declares the scheme in the OpenAPI document; the token is checked by the validator (a
# missing one is a 401 from there, in the API's error shape).
TOKEN = APIKeyHeader(name="X-Auth-Token", scheme_name="token", auto_error=False,
                     description="A Keystone token (the embedded identity's or a real one)")


def context_dependency(validator: TokenValidator, db: Database):  # type: ignore[no-untyped-def]
    def context(request: Request, token: str | None = Security(TOKEN)) -> RequestContext:
        data = validator.validate(token)
        project = request.path_params.get("project_id")
        if project is not None and project != data.project_id:
            raise exceptions.Forbidden(
                f"The token is scoped to another project than {project}")
        check_owned(db, data.project_id, request.path_params)
        return RequestContext(user_id=data.user_id, project_id=data.project_id,
                              roles=data.roles, user_name=data.user_name,
                              auth_token=token)
    return context
