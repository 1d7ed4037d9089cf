"""Who is calling: the X-Auth-Token, checked against the project in the path."""

from __future__ import annotations

from fastapi import Request

from coriolis import exceptions
from coriolis.api.ownership import check_owned
from coriolis.context import RequestContext
from coriolis.db.session import Database
from coriolis.identity.validation import TokenValidator


def context_dependency(validator: TokenValidator, db: Database):  # type: ignore[no-untyped-def]
    def context(request: Request) -> RequestContext:
        data = validator.validate(request.headers.get("X-Auth-Token"))
        project = request.path_params.get("project_id")
        if project is not None and project != data.project_id:
            raise exceptions.Forbidden(
                f"The token is scoped to another project than {project}")
        check_owned(db, data.project_id, request.path_params)
        return RequestContext(user_id=data.user_id, project_id=data.project_id,
                              roles=data.roles, user_name=data.user_name,
                              auth_token=request.headers.get("X-Auth-Token"))
    return context
