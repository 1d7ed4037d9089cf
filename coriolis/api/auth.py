"""Who is calling: the X-Auth-Token, checked against the project in the path."""

from __future__ import annotations

from fastapi import Request

from coriolis import exceptions
from coriolis.context import RequestContext
from coriolis.identity.tokens import TokenIssuer


def context_dependency(issuer: TokenIssuer):  # type: ignore[no-untyped-def]
    def context(request: Request) -> RequestContext:
        data = issuer.validate(request.headers.get("X-Auth-Token"))
        project = request.path_params.get("project_id")
        if project is not None and project != data.project_id:
            raise exceptions.Forbidden(
                f"The token is scoped to another project than {project}")
        return RequestContext(user_id=data.user_id, project_id=data.project_id,
                              roles=data.roles, user_name=data.user_name)
    return context


def require_admin(ctx: RequestContext) -> None:
    if not ctx.is_admin:
        raise exceptions.Forbidden("This operation is restricted to administrators")
