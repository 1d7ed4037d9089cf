"""The dashboard's routes, under ``/dashboard``.

- Pages (``GET /dashboard/...``): full HTML; without a login they redirect (303) to
  ``/dashboard/login``.
- Data routes (``/dashboard/data/...``): the HTML fragments the pages refresh, the live
  execution stream (``text/event-stream``) and the actions (start a migration, execute or
  deploy a replica, cancel an execution). Without a valid login they answer 401; the actions
  also need htmx's ``HX-Request: true`` header (403 otherwise: a cross-site form cannot set
  it), besides the ``SameSite=Strict`` cookie.

The login is a Keystone token (the embedded identity's or a real Keystone's, ``login.py``)
kept in an ``HttpOnly`` cookie scoped to ``/dashboard`` and checked on every request by the
API's own token validator. Reads and actions go through the same views
(``coriolis.api.views``), request schemas and conductor calls as the v1 API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader
from pydantic import ValidationError
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from coriolis import constants as c
from coriolis import exceptions
from coriolis.api import views
from coriolis.api.errors import describe
from coriolis.api.schemas.transfers import MigrationCreate, ReplicaDeploy
from coriolis.context import RequestContext
from coriolis.dashboard import render
from coriolis.dashboard.login import Login
from coriolis.db import models, transfers
from coriolis.identity.tokens import TokenData
from coriolis.identity.validation import TokenValidator
from coriolis.service import Services

LOG = logging.getLogger(__name__)
HERE = Path(__file__).parent
VENDOR_FILES = ("htmx.min.js", "sse.min.js")
PREFIX = "/dashboard"
COOKIE = "coriolis_dashboard_token"
STREAM_POLL_SECONDS = 0.5
STREAM_KEEPALIVE_SECONDS = 15.0
# A stream ends after this long; the browser's EventSource reconnects (and is re-checked).
STREAM_MAX_SECONDS = 120.0
GENERIC_ERROR = "The server could not complete the request"


class NotLoggedIn(Exception):
    """No valid login: a page redirects to the login form, a data route answers 401."""

    def __init__(self, page: bool) -> None:
        super().__init__("Log in first")
        self.page = page


class NotFromDashboard(Exception):
    """An action without htmx's ``HX-Request`` header (403)."""


@dataclass
class Viewer:
    ctx: RequestContext
    token: TokenData


def _templates() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(status_class=render.status_class, short_id=render.short_id,
                       schedule_text=render.schedule_text, is_active=render.is_active,
                       prefix=PREFIX)
    return env


def _sse(event: str, data: str) -> str:
    """One server-sent event; every line of ``data`` gets its own ``data:`` field."""
    return f"event: {event}\n" + "".join(f"data: {line}\n" for line in data.splitlines()) + "\n"


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0] if values else ""


def _json_field(form: dict[str, list[str]], key: str) -> Any:
    text = _one(form, key).strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise exceptions.InvalidInput(f"{key}: not valid JSON ({exc.msg}, line {exc.lineno})"
                                      ) from None


def migration_body(form: dict[str, list[str]]) -> dict[str, Any]:
    """The start-migration form as a migration body (``MigrationCreate``, the API's): the
    instances one per line or comma-separated, the environments and maps as JSON objects.
    ``InvalidInput`` or pydantic's ``ValidationError``, naming the field, for bad input."""
    names = _one(form, "instances").replace(",", "\n").splitlines()
    data: dict[str, Any] = {
        "origin_endpoint_id": _one(form, "origin_endpoint_id"),
        "destination_endpoint_id": _one(form, "destination_endpoint_id"),
        "instances": [n.strip() for n in names if n.strip()],
        "skip_os_morphing": "skip_os_morphing" in form,
        "shutdown_instances": "shutdown_instances" in form,
    }
    for key in ("source_environment", "destination_environment", "network_map",
                "storage_mappings"):
        value = _json_field(form, key)
        if value is not None:
            data[key] = value
    count = _one(form, "replication_count").strip()
    if count:
        if not count.isdigit():
            raise exceptions.InvalidInput("replication_count: must be a whole number")
        data["replication_count"] = int(count)
    notes = _one(form, "notes").strip()
    if notes:
        data["notes"] = notes
    body = MigrationCreate.model_validate(data)
    return body.model_dump(by_alias=True, exclude_unset=True)


def _safe_next(value: str | None) -> str:
    """Where to go after the login: a dashboard page only (no open redirect)."""
    if value and value.startswith(PREFIX + "/") and not value.startswith("//") \
            and "\\" not in value and not value.startswith(PREFIX + "/data/"):
        return value
    return PREFIX + "/migrations"


def install(app: FastAPI, services: Services, validator: TokenValidator,
            login: Login) -> None:
    """Mount the dashboard (pages, data routes, static files) on ``app``."""
    missing = [f for f in VENDOR_FILES if not (HERE / "static" / "vendor" / f).exists()]
    if missing:
        LOG.warning("dashboard: %s missing from %s (run ./dev setup): the pages will not "
                    "update live", ", ".join(missing), HERE / "static" / "vendor")
    app.mount(PREFIX + "/static", StaticFiles(directory=HERE / "static"),
              name="dashboard-static")
    templates = _templates()

    def page(name: str, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(**context),
                            status_code=status, headers=headers)

    def fragment_error(code: int, message: str) -> HTMLResponse:
        return page("_error.html", status=code, message=message)

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, exc: NotLoggedIn) -> Response:
        if exc.page:
            target = quote(request.url.path, safe="/")
            return RedirectResponse(f"{PREFIX}/login?next={target}", status_code=303)
        # htmx follows HX-Redirect even on an error status: an expired login goes back to
        # the form instead of leaving a stale page.
        return page("_error.html", status=401, message="Log in first",
                    headers={"HX-Redirect": f"{PREFIX}/login",
                             "WWW-Authenticate": 'Cookie realm="coriolis-dashboard"'})

    @app.exception_handler(NotFromDashboard)
    async def not_from_dashboard(request: Request, exc: NotFromDashboard) -> Response:
        return fragment_error(403, "Actions are taken from the dashboard's pages")

    app.include_router(_router(services, validator, login, templates, page, fragment_error))


def _router(services: Services, validator: TokenValidator, login: Login,
            templates: Environment, page: Callable[..., HTMLResponse],
            fragment_error: Callable[[int, str], HTMLResponse]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    db, conductor = services.db, services.conductor

    # --- who is calling ----------------------------------------------------------------------
    def viewer(request: Request, page_route: bool) -> Viewer:
        token = request.cookies.get(COOKIE)
        if not token:
            raise NotLoggedIn(page_route)
        try:
            data = validator.validate(token)
        except exceptions.Unauthorized:
            raise NotLoggedIn(page_route) from None
        ctx = RequestContext(user_id=data.user_id, project_id=data.project_id,
                             roles=data.roles, user_name=data.user_name, auth_token=token)
        return Viewer(ctx, data)

    async def actor(request: Request) -> Viewer:
        who = await run_in_threadpool(viewer, request, False)
        if request.headers.get("HX-Request") != "true":
            raise NotFromDashboard()
        return who

    def act(action: Callable[[], str | None]) -> Response:
        """Run an action: 204, with ``HX-Redirect`` to the page it returns (if any); an
        error fragment naming the field or the state at fault otherwise (4xx), or a generic
        one (5xx, logged)."""
        try:
            location = action()
        except ValidationError as exc:
            return fragment_error(400, describe(exc.errors()))
        except exceptions.CoriolisError as exc:
            if exc.code >= 500 and exc.code != 503:
                LOG.error("dashboard action failed: %s", exc)
                return fragment_error(500, GENERIC_ERROR)
            return fragment_error(exc.code, str(exc))
        return Response(status_code=204, headers={"HX-Redirect": location} if location else {})

    async def form_of(request: Request) -> dict[str, list[str]]:
        return parse_qs((await request.body()).decode("utf-8", "replace"),
                        keep_blank_values=True)

    # --- reads -------------------------------------------------------------------------------
    def endpoint_names(session: Any, project_id: str) -> dict[str, str]:
        rows = session.execute(select(models.Endpoint.id, models.Endpoint.name).where(
            models.Endpoint.project_id == project_id))
        return {row.id: row.name for row in rows}

    def endpoints_data(ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.Endpoint).where(
                models.Endpoint.project_id == ctx.project_id).order_by(
                models.Endpoint.created_at))
            return {"endpoints": [views.endpoint(r, None) for r in rows]}

    def migrations_data(ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            rows = transfers.list_actions(session, ctx.project_id, c.ACTION_TYPE_MIGRATION)
            return {"migrations": [views.migration(r, detail=False) for r in reversed(rows)],
                    "names": endpoint_names(session, ctx.project_id)}

    def replicas_data(ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            rows = transfers.list_actions(session, ctx.project_id, c.ACTION_TYPE_REPLICA)
            items = []
            for row in reversed(rows):
                item = views.replica(row, detail=False)
                item["execution_count"] = len(row.executions)
                items.append(item)
            return {"replicas": items, "names": endpoint_names(session, ctx.project_id)}

    def replica_data(ctx: RequestContext, replica_id: str) -> dict[str, Any]:
        with db.reader() as session:
            row = transfers.get_action(session, ctx.project_id, replica_id,
                                       c.ACTION_TYPE_REPLICA)
            replica = views.replica(row, detail=False)
            executions = [views.execution(e, with_tasks=False) for e in reversed(row.executions)]
            schedules = session.scalars(select(models.ReplicaSchedule).where(
                models.ReplicaSchedule.replica_id == replica_id).order_by(
                models.ReplicaSchedule.created_at)).all()
            return {"replica": replica, "executions": executions,
                    "schedules": [views.schedule(s) for s in schedules],
                    "names": endpoint_names(session, ctx.project_id)}

    def pools_data(ctx: RequestContext) -> dict[str, Any]:
        with db.reader() as session:
            rows = session.scalars(select(models.MinionPool).where(
                models.MinionPool.project_id == ctx.project_id).order_by(
                models.MinionPool.created_at))
            return {"pools": [views.minion_pool(r) for r in rows],
                    "names": endpoint_names(session, ctx.project_id)}

    def execution_data(ctx: RequestContext, execution_id: str) -> dict[str, Any]:
        with db.reader() as session:
            execution = transfers.get_execution(session, ctx.project_id, execution_id)
            return {"execution": render.execution_view(views.execution(execution))}

    LISTS: dict[str, tuple[str, str, Callable[[RequestContext], dict[str, Any]]]] = {
        # name: (title, fragment template, loader)
        "endpoints": ("Endpoints", "_endpoints.html", endpoints_data),
        "migrations": ("Migrations", "_migrations.html", migrations_data),
        "replicas": ("Replicas", "_replicas.html", replicas_data),
        "minion-pools": ("Minion pools", "_pools.html", pools_data),
    }

    def not_found_page(who: Viewer, message: str) -> HTMLResponse:
        return page("message.html", status=404, who=who, title="Not found", message=message)

    # --- login -------------------------------------------------------------------------------
    @router.get("/login")
    def login_form(next: str | None = None) -> HTMLResponse:
        return page("login.html", next=_safe_next(next), error=None, username="",
                    project="", domain="Default")

    @router.post("/login")
    async def login_submit(request: Request) -> Response:
        form = await form_of(request)
        fields = {k: _one(form, k).strip() for k in ("username", "project", "domain")}
        password = _one(form, "password")
        target = _safe_next(_one(form, "next"))
        missing = [k for k in ("username", "project") if not fields[k]]
        if not password:
            missing.append("password")
        error = f"Required: {', '.join(missing)}" if missing else None
        status = 400
        if not missing:
            try:
                token, expires_at = await run_in_threadpool(
                    login, fields["username"], password, fields["project"],
                    fields["domain"] or "Default")
            except exceptions.Unauthorized as exc:
                error, status = str(exc), 401
            except exceptions.CoriolisError as exc:
                LOG.error("dashboard login failed: %s", exc)
                error, status = GENERIC_ERROR, 500
            else:
                response = RedirectResponse(target, status_code=303)
                response.set_cookie(COOKIE, token, max_age=max(1, int(expires_at - time.time())),
                                    path=PREFIX, httponly=True, samesite="strict",
                                    secure=request.url.scheme == "https")
                return response
        return page("login.html", status=status, next=target, error=error,
                    username=fields["username"], project=fields["project"],
                    domain=fields["domain"] or "Default")

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        revoke = getattr(validator, "revoke", None)
        if token and revoke is not None:  # the embedded identity's token dies with the login
            try:
                await run_in_threadpool(revoke, token)
            except exceptions.Unauthorized:
                pass
        response = Response(status_code=204, headers={"HX-Redirect": f"{PREFIX}/login"})
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # --- pages -------------------------------------------------------------------------------
    @router.get("")
    @router.get("/")
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/migrations", status_code=303)

    @router.get("/replicas/{replica_id}")
    def replica_page(request: Request, replica_id: str) -> HTMLResponse:
        who = viewer(request, True)
        try:
            data = replica_data(who.ctx, replica_id)
        except exceptions.NotFound as exc:
            return not_found_page(who, str(exc))
        return page("replica.html", who=who, title=f"Replica {replica_id[:8]}",
                    section="replicas", data_url=f"{PREFIX}/data/replicas/{replica_id}",
                    **data)

    @router.get("/migrations/{migration_id}")
    def migration_page(request: Request, migration_id: str) -> HTMLResponse:
        who = viewer(request, True)
        with db.reader() as session:
            try:
                row = transfers.get_action(session, who.ctx.project_id, migration_id,
                                           c.ACTION_TYPE_MIGRATION)
            except exceptions.NotFound as exc:
                return not_found_page(who, str(exc))
            action = views.migration(row, detail=False)
            names = endpoint_names(session, who.ctx.project_id)
            execution_id = row.executions[-1].id if row.executions else None
        if execution_id is None:
            return not_found_page(who, f"Migration {migration_id} has no execution")
        return execution_page(who, "Migration", action, names, execution_id, "migrations")

    @router.get("/replicas/{replica_id}/executions/{execution_id}")
    def replica_execution_page(request: Request, replica_id: str,
                               execution_id: str) -> HTMLResponse:
        who = viewer(request, True)
        with db.reader() as session:
            try:
                row = transfers.get_action(session, who.ctx.project_id, replica_id,
                                           c.ACTION_TYPE_REPLICA)
                transfers.get_execution(session, who.ctx.project_id, execution_id, replica_id)
            except exceptions.NotFound as exc:
                return not_found_page(who, str(exc))
            action = views.replica(row, detail=False)
            names = endpoint_names(session, who.ctx.project_id)
        return execution_page(who, "Replica", action, names, execution_id, "replicas")

    def execution_page(who: Viewer, kind: str, action: dict[str, Any], names: dict[str, str],
                       execution_id: str, section: str) -> HTMLResponse:
        data = execution_data(who.ctx, execution_id)
        return page("execution.html", who=who, section=section, kind=kind, action=action,
                    names=names, title=f"{kind} {action['id'][:8]}",
                    stream_url=f"{PREFIX}/data/executions/{execution_id}/stream", **data)

    def list_page(name: str) -> None:
        title, fragment, loader = LISTS[name]

        @router.get(f"/{name}", name=f"dashboard_{name}")
        def show(request: Request) -> HTMLResponse:
            who = viewer(request, True)
            data = loader(who.ctx)
            extra = endpoints_data(who.ctx) if name == "migrations" else {}
            return page("list.html", who=who, title=title, section=name, fragment=fragment,
                        data_url=f"{PREFIX}/data/{name}", **extra, **data)

        @router.get(f"/data/{name}", name=f"dashboard_data_{name}")
        def data(request: Request) -> HTMLResponse:
            return page(fragment, **loader(viewer(request, False).ctx))

    for name in LISTS:
        list_page(name)

    # --- data routes -------------------------------------------------------------------------
    @router.get("/data/replicas/{replica_id}")
    def replica_fragment(request: Request, replica_id: str) -> HTMLResponse:
        who = viewer(request, False)
        try:
            return page("_replica.html", **replica_data(who.ctx, replica_id))
        except exceptions.NotFound as exc:
            return fragment_error(404, str(exc))

    @router.get("/data/executions/{execution_id}/stream")
    async def execution_stream(request: Request, execution_id: str) -> Response:
        """``execution`` events (the live fragment, whenever it changed: the tasks,
        progress updates and events the conductor stores, polled every 0.5 s), then one
        ``done`` event (data: the final status) once the execution has ended."""
        who = await run_in_threadpool(viewer, request, False)
        try:
            await run_in_threadpool(execution_data, who.ctx, execution_id)
        except exceptions.NotFound as exc:
            return fragment_error(404, str(exc))
        live = templates.get_template("_execution.html")

        async def events() -> AsyncIterator[str]:
            last, quiet, started = None, 0.0, time.monotonic()
            server = getattr(request.app.state, "uvicorn", None)
            while time.monotonic() - started < STREAM_MAX_SECONDS:
                if await request.is_disconnected() or getattr(server, "should_exit", False):
                    return
                try:
                    data = await run_in_threadpool(execution_data, who.ctx, execution_id)
                except exceptions.NotFound:  # deleted meanwhile
                    yield _sse("done", "DELETED")
                    return
                html = live.render(**data)
                if html != last:
                    yield _sse("execution", html)
                    last, quiet = html, 0.0
                elif quiet >= STREAM_KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    quiet = 0.0
                if not data["execution"]["active"]:
                    yield _sse("done", data["execution"]["status"] or "")
                    return
                await asyncio.sleep(STREAM_POLL_SECONDS)
                quiet += STREAM_POLL_SECONDS

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})

    # --- actions -----------------------------------------------------------------------------
    Form = dict[str, list[str]]

    async def perform(request: Request, action: Callable[[Viewer, Form], str | None]
                      ) -> Response:
        """An action of a logged-in dashboard page (``actor``) on the posted form, run in
        the thread pool through ``act``."""
        who = await actor(request)
        form = await form_of(request)
        return await run_in_threadpool(act, lambda: action(who, form))

    @router.post("/data/migrations")
    async def start_migration(request: Request) -> Response:
        def start(who: Viewer, form: Form) -> str:
            migration_id = conductor.create_migration(who.ctx, migration_body(form))
            return f"{PREFIX}/migrations/{migration_id}"
        return await perform(request, start)

    @router.post("/data/replicas/{replica_id}/executions")
    async def execute_replica(request: Request, replica_id: str) -> Response:
        def execute(who: Viewer, form: Form) -> str:
            execution_id = conductor.execute_replica(
                who.ctx, replica_id, "shutdown_instances" in form)
            return f"{PREFIX}/replicas/{replica_id}/executions/{execution_id}"
        return await perform(request, execute)

    @router.post("/data/replicas/{replica_id}/deployments")
    async def deploy_replica(request: Request, replica_id: str) -> Response:
        def deploy(who: Viewer, form: Form) -> str:
            body = ReplicaDeploy.model_validate({
                "replica_id": replica_id, "skip_os_morphing": "skip_os_morphing" in form,
                "clone_disks": "clone_disks" in form})
            migration_id = conductor.deploy_replica(
                who.ctx, body.model_dump(by_alias=True, exclude_unset=True))
            return f"{PREFIX}/migrations/{migration_id}"
        return await perform(request, deploy)

    @router.post("/data/executions/{execution_id}/cancel")
    async def cancel(request: Request, execution_id: str) -> Response:
        def cancel_it(who: Viewer, form: Form) -> None:
            conductor.cancel_execution(who.ctx, execution_id, "force" in form)
        return await perform(request, cancel_it)

    return router
