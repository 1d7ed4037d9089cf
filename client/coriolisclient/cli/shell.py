"""The `coriolis` application: global options, Keystone authentication, command registry."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from cliff import app, commandmanager
from keystoneauth1 import loading, session
from keystoneauth1.identity import v2, v3

from coriolisclient import __version__, token_cache
from coriolisclient import client as coriolis_client
from coriolisclient.cli import admin, endpoints, extras, transfers
from coriolisclient.cli.utils import CLIError
from coriolisclient.exceptions import HTTPAuthError

COMMAND_MODULES = (endpoints, transfers, admin, extras)


def env(*names: str, default: Any = None) -> Any:
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    return default


def identity_version(explicit: str | None, auth_url: str) -> str:
    """``"2"`` or ``"3"``: the explicit version if given, else the one the auth URL ends
    in (``.../v2.0`` or ``.../v3``, as in the seed README's login example), else 3."""
    if explicit:
        return "2" if str(explicit) in ("2", "2.0") else "3"
    last = auth_url.rstrip("/").rsplit("/", 1)[-1]
    return "2" if last in ("v2.0", "v2") else "3"


class CoriolisApp(app.App):
    CONSOLE_MESSAGE_FORMAT = "%(levelname)s: %(message)s"

    def __init__(self) -> None:
        # No entry-point namespace: every command is added here, and a namespace would
        # scan every installed package's entry points on each run.
        manager = commandmanager.CommandManager(None)
        for module in COMMAND_MODULES:
            for name, command in module.COMMANDS.items():
                manager.add_command(name, command)
        super().__init__(description="Coriolis command line client", version=__version__,
                         command_manager=manager, deferred_help=True)
        self._client: coriolis_client.Client | None = None
        self._cache: token_cache.TokenCache | None = None

    def build_option_parser(self, description: str | None, version: str | None,
                            argparse_kwargs: dict[str, Any] | None = None
                            ) -> argparse.ArgumentParser:
        parser = super().build_option_parser(description, version, argparse_kwargs)
        add = parser.add_argument
        add("--no-auth", "-N", action="store_true", help="Do not use authentication")
        add("--os-identity-api-version", default=env("OS_IDENTITY_API_VERSION"),
            help="2 (or 2.0) or 3; default: from an --os-auth-url ending in /v2.0 or /v3, "
                 "else 3")
        add("--os-auth-url", "-A", default=env("OS_AUTH_URL"))
        add("--os-username", "-U", default=env("OS_USERNAME"))
        add("--os-user-id", default=env("OS_USER_ID"))
        add("--os-password", "-P", default=env("OS_PASSWORD"))
        add("--os-user-domain-id", default=env("OS_USER_DOMAIN_ID"))
        add("--os-user-domain-name", default=env("OS_USER_DOMAIN_NAME"))
        add("--os-tenant-name", "-T", default=env("OS_TENANT_NAME"))
        add("--os-tenant-id", "-I", default=env("OS_TENANT_ID"))
        add("--os-project-id", default=env("OS_PROJECT_ID"))
        add("--os-project-name", default=env("OS_PROJECT_NAME"))
        add("--os-project-domain-id", default=env("OS_PROJECT_DOMAIN_ID"))
        add("--os-project-domain-name", default=env("OS_PROJECT_DOMAIN_NAME"))
        add("--os-auth-token", default=env("OS_AUTH_TOKEN"))
        add("--endpoint", "-E", default=env("CORIOLIS_ENDPOINT"),
            help="Coriolis API URL, instead of the Keystone catalog's")
        add("--interface", default=env("CORIOLIS_INTERFACE", default="public"))
        add("--service-type", default=env("CORIOLIS_SERVICE_TYPE", default="migration"))
        add("--service-name", default=env("CORIOLIS_SERVICE_NAME"))
        add("--region-name", default=env("CORIOLIS_REGION_NAME"))
        add("--coriolis-api-version", default=env("CORIOLIS_API_VERSION", default="v1"))
        add("--no-token-cache", action="store_true",
            help="Log in afresh and keep no token between commands (by default the token "
                 "is kept, mode 0600, in ~/.cache/coriolis/tokens; CORIOLIS_TOKEN_CACHE=0 "
                 "turns it off)")
        loading.register_session_argparse_arguments(parser)
        return parser

    def configure_logging(self) -> None:
        """cliff adds handlers to the root logger on every run; drop those of an earlier run
        in the same process (``main()`` called twice), whose streams may be closed."""
        root = logging.getLogger("")
        for handler in list(root.handlers):
            if getattr(handler, "_coriolis_cli", False):
                root.removeHandler(handler)
        before = set(root.handlers)
        super().configure_logging()
        for handler in set(root.handlers) - before:
            handler._coriolis_cli = True  # type: ignore[attr-defined]

    # --- authentication ---------------------------------------------------------------------
    def _auth_plugin(self) -> Any:
        o = self.options
        if o.no_auth:
            raise CLIError("--no-auth is not supported: the Coriolis API requires Keystone "
                           "authentication")
        if not o.os_auth_url:
            raise CLIError("You must provide authentication credentials: --os-auth-url "
                           "(or OS_AUTH_URL) and a user and password or a token")
        v2_api = identity_version(o.os_identity_api_version, o.os_auth_url) == "2"
        if v2_api:
            if not (o.os_tenant_id or o.os_tenant_name):
                raise CLIError("Identity v2 needs --os-tenant-id or --os-tenant-name")
            scope = {"tenant_id": o.os_tenant_id, "tenant_name": o.os_tenant_name}
            if o.os_auth_token:
                return v2.Token(o.os_auth_url, o.os_auth_token, **scope)
            return v2.Password(o.os_auth_url, username=o.os_username, user_id=o.os_user_id,
                               password=o.os_password, **scope)
        if not (o.os_project_id or (o.os_project_name and (o.os_project_domain_name
                                                            or o.os_project_domain_id))):
            raise CLIError("Identity v3 needs --os-project-id, or --os-project-name with "
                           "--os-project-domain-name or --os-project-domain-id")
        scope = {"project_id": o.os_project_id, "project_name": o.os_project_name,
                 "project_domain_id": o.os_project_domain_id,
                 "project_domain_name": o.os_project_domain_name}
        if o.os_auth_token:
            return v3.Token(o.os_auth_url, o.os_auth_token, **scope)
        if not o.os_password or not (o.os_username or o.os_user_id):
            raise CLIError("You must provide a user (--os-username or --os-user-id) and a "
                           "password (--os-password or OS_PASSWORD)")
        return v3.Password(o.os_auth_url, username=o.os_username, user_id=o.os_user_id,
                           password=o.os_password, user_domain_id=o.os_user_domain_id,
                           user_domain_name=o.os_user_domain_name, **scope)

    def _token_cache(self, plugin: Any) -> token_cache.TokenCache | None:
        """The stored token of this login, when the cache is on."""
        if self.options.no_token_cache or not token_cache.enabled():
            return None
        return token_cache.TokenCache.for_plugin(plugin)

    def clean_up(self, cmd: Any, result: int, err: BaseException | None) -> None:
        """Keep a new token for the next command; drop the stored one when the login
        itself was refused."""
        cache, self._cache = self._cache, None
        if cache is None or self._client is None:
            return
        if isinstance(err, HTTPAuthError):
            cache.forget()
        else:
            cache.save(self._client.session.auth)

    @property
    def client(self) -> coriolis_client.Client:
        if self._client is None:
            o = self.options
            verify: Any = o.os_cacert if o.os_cacert else not o.insecure
            plugin = self._auth_plugin()
            self._cache = self._token_cache(plugin)
            if self._cache is not None:
                self._cache.load(plugin)
            sess = session.Session(auth=plugin, verify=verify)
            override = (f"{o.endpoint.rstrip('/')}/{o.coriolis_api_version}"
                        if o.endpoint else None)
            self._client = coriolis_client.Client(
                session=sess, service_type=o.service_type, interface=o.interface,
                region_name=o.region_name, service_name=o.service_name,
                endpoint_override=override, version=o.coriolis_api_version, verify=verify)
        return self._client


def main(argv: list[str] | None = None) -> int:
    return CoriolisApp().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
