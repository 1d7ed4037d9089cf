"""Who may do what, in one place. A rule names the roles that grant it (any of them), or
``any`` for every authenticated user of the project. Rules are overridable in the
configuration file's ``[policy]`` section, e.g. ``regions:list = admin``.

Project isolation is not a rule: every project resource is visible to its project only.
"""

from __future__ import annotations

from coriolis import exceptions
from coriolis.config import ConfigError
from coriolis.context import RequestContext

DEFAULT_RULES: dict[str, str] = {
    # Regions: members read them (to place endpoints), admins manage them.
    "regions:list": "any", "regions:show": "any", "regions:create": "admin",
    "regions:update": "admin", "regions:delete": "admin",
    # Worker services are the operator's: host names and state are not for tenants.
    "services:list": "admin", "services:show": "admin", "services:create": "admin",
    "services:update": "admin", "services:delete": "admin",
    "diagnostics:get": "admin",
    # The coriolis-logger service: the server's logs hold every project's activity.
    "logs:list": "admin", "logs:show": "admin", "logs:stream": "admin",
}


class Policy:
    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        unknown = set(overrides or {}) - set(DEFAULT_RULES)
        if unknown:
            raise ConfigError(f"[policy]: unknown rules {', '.join(sorted(unknown))} "
                             f"(known: {', '.join(DEFAULT_RULES)})")
        self.rules = {**DEFAULT_RULES, **(overrides or {})}

    def allows(self, ctx: RequestContext, rule: str) -> bool:
        granted = self.rules[rule].replace(",", " ").split()
        return "any" in granted or any(role in granted for role in ctx.roles)

    def enforce(self, ctx: RequestContext, rule: str) -> None:
        if not self.allows(ctx, rule):
            raise exceptions.Forbidden(
                f"Policy does not allow {rule} (needs role {self.rules[rule]})")
