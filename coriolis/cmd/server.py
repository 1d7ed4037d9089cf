"""`coriolis-server`: the all-in-one server and its administration commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shlex
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from coriolis import __version__
from coriolis.api.requestid import RequestIdFilter
from coriolis.cmd import identity_admin, local_cloud, writer
from coriolis.config import ConfigError, Settings

if TYPE_CHECKING:
    from coriolis.service import Services

LOG = logging.getLogger("coriolis")


def _settings(args: argparse.Namespace) -> Settings:
    return Settings(host=getattr(args, "host", "127.0.0.1"),
                    port=getattr(args, "port", 7667),
                    data_dir=Path(args.data_dir) if args.data_dir else Path(),
                    database_url=args.database_url,
                    workers=getattr(args, "workers", 4),
                    transport_url=getattr(args, "transport_url", None),
                    bus_namespace=getattr(args, "bus_namespace", None) or "",
                    config_file=Path(args.config_file) if getattr(args, "config_file", None)
                    else None)


def _setup_logging(settings: Settings, verbose: bool, name: str = "coriolis") -> None:
    settings.make_data_dir()
    # Lines written while handling an API request start with its id ([req-...]).
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(request_prefix)s%(message)s")
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for handler in (logging.StreamHandler(sys.stderr),
                    logging.FileHandler(settings.data_dir / f"{name}.log")):
        handler.setFormatter(fmt)
        handler.addFilter(RequestIdFilter())
        root.addHandler(handler)


def write_openrc(settings: Settings, url: str, password: str) -> Path:
    values = {"OS_AUTH_URL": f"{url}/identity/v3", "OS_USERNAME": "admin",
              "OS_PASSWORD": password, "OS_PROJECT_NAME": "admin",
              "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
              "OS_IDENTITY_API_VERSION": "3"}
    path = settings.data_dir / "openrc"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())
    return path


def _listen(settings: Settings) -> tuple[socket.socket, str]:
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets
    # whose proto says TCP, and the accepted ones inherit it; with proto 0 every response
    # written in two parts waited for the client's delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return sock, f"http://{host}:{port}"


def _serve_api(services: Services) -> None:
    """Bootstrap the admin user, write openrc, serve the API until interrupted, on
    ``service.API_THREADS`` request threads (the database pool is sized for them)."""
    import anyio.to_thread
    import uvicorn

    from coriolis.api.app import create_app
    from coriolis.identity.users import bootstrap
    from coriolis.service import API_THREADS

    settings = services.settings
    app = create_app(services)  # configuration errors show before anything is announced
    sock, url = _listen(settings)
    if settings.keystone:
        print(f"Tokens are validated by Keystone at {settings.keystone['auth_url']}")
    else:
        password = bootstrap(services.db, settings.data_dir / "admin-password")
        openrc = write_openrc(settings, url, password)
        print(f"Credentials written to {openrc}; to use the CLI:\n  source {openrc}")
    print(f"Coriolis API listening on {url}", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    app.state.uvicorn = server  # long-lived responses (the dashboard's streams) end at exit

    async def serve() -> None:
        # Sync routes and dependencies run on anyio's default thread limiter.
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        await server.serve(sockets=[sock])

    asyncio.run(serve())


def cmd_all_in_one(args: argparse.Namespace) -> None:
    from coriolis.service import build_all_in_one

    settings = _settings(args)
    _setup_logging(settings, args.verbose)
    services = build_all_in_one(settings)
    try:
        _serve_api(services)
    finally:
        services.close()


def cmd_api(args: argparse.Namespace) -> None:
    from coriolis.service import build_distributed

    settings = _settings(args)
    _setup_logging(settings, args.verbose, "api")
    services = build_distributed(settings, "api")
    try:
        _serve_api(services)
    finally:
        services.close()


def _until_signalled() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_background(args: argparse.Namespace) -> None:
    """``conductor`` and ``scheduler``: no HTTP, they run until SIGTERM/SIGINT."""
    from coriolis.service import build_distributed

    settings = _settings(args)
    _setup_logging(settings, args.verbose, args.command)
    stop = _until_signalled()
    services = build_distributed(settings, args.command)
    print(f"coriolis {args.command} running", flush=True)
    try:
        stop.wait()
    finally:
        services.close()


def cmd_worker(args: argparse.Namespace) -> None:
    from coriolis.service import run_worker

    settings = _settings(args)
    _setup_logging(settings, args.verbose, f"worker-{args.name}")
    stop = _until_signalled()
    run_worker(settings, args.name, args.max_tasks, stop)


def cmd_db_upgrade(args: argparse.Namespace) -> None:
    from coriolis.db.session import Database

    settings = _settings(args)
    settings.make_data_dir()
    assert settings.database_url is not None
    Database(settings.database_url).create_schema()
    print("database schema is up to date")


def cmd_bootstrap(args: argparse.Namespace) -> None:
    from coriolis.db.session import Database
    from coriolis.identity.users import bootstrap

    settings = _settings(args)
    settings.make_data_dir()
    assert settings.database_url is not None
    db = Database(settings.database_url)
    db.create_schema()
    bootstrap(db, settings.data_dir / "admin-password")
    print(f"admin user ready; password in {settings.data_dir / 'admin-password'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coriolis-server",
                                     description="Coriolis migration server")
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", help="state directory (default $CORIOLIS_DATA_DIR or "
                                          "~/.local/share/coriolis)")
        p.add_argument("--database-url", help="SQLAlchemy URL (default SQLite in the data dir)")
        p.add_argument("--config-file", help="INI file with [keystone], [barbican], [policy] "
                                             "and [local] sections (default "
                                             "$CORIOLIS_CONFIG_FILE, else "
                                             "DATA_DIR/coriolis.conf if it exists)")

    aio = sub.add_parser("all-in-one", help="API, conductor and a worker in one process")
    aio.add_argument("--host", default="127.0.0.1")
    aio.add_argument("--port", type=int, default=7667, help="0 picks a free port")
    aio.add_argument("--workers", type=int, default=4, help="concurrent tasks")
    aio.add_argument("-v", "--verbose", action="store_true")
    data_options(aio)
    aio.set_defaults(func=cmd_all_in_one)

    def scale_out_options(p: argparse.ArgumentParser) -> None:
        data_options(p)
        p.add_argument("--transport-url", help="message broker, e.g. "
                       "amqp://guest:guest@127.0.0.1:5672// (default $CORIOLIS_TRANSPORT_URL)")
        p.add_argument("--bus-namespace", help="prefix of the broker's queues and exchanges "
                       "(default $CORIOLIS_BUS_NAMESPACE or coriolis)")
        p.add_argument("-v", "--verbose", action="store_true")

    api = sub.add_parser("api", help="scale-out: the REST API")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=7667, help="0 picks a free port")
    scale_out_options(api)
    api.set_defaults(func=cmd_api)
    for name, text in (("conductor", "scale-out: applies worker reports, watches heartbeats, "
                                      "recovers executions"),
                       ("scheduler", "scale-out: runs replica schedules")):
        part = sub.add_parser(name, help=text)
        scale_out_options(part)
        part.set_defaults(func=cmd_background)
    work = sub.add_parser("worker", help="scale-out: runs tasks and endpoint operations")
    work.add_argument("--name", default=socket.gethostname(),
                      help="service host name, unique per worker (default: this host's name)")
    work.add_argument("--max-tasks", type=int, default=4, help="concurrent tasks")
    scale_out_options(work)
    work.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database administration")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="bring the schema to the newest revision")
    data_options(upgrade)
    upgrade.set_defaults(func=cmd_db_upgrade)

    boot = sub.add_parser("bootstrap", help="create the first admin user and project")
    data_options(boot)
    boot.set_defaults(func=cmd_bootstrap)

    identity_admin.register_subcommands(sub, data_options)
    local_cloud.register_subcommands(sub)
    writer.register_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except KeyboardInterrupt:
        pass
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
