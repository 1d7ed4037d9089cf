"""Who is asking: the identity behind a request or a background job."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestContext:
    user_id: str | None
    project_id: str
    roles: tuple[str, ...] = field(default_factory=tuple)
    user_name: str | None = None
    # The caller's token, to act for them on other services (a real Barbican); never shown.
    auth_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @classmethod
    def admin_for(cls, project_id: str) -> RequestContext:
        """A context for internal jobs (schedules, recovery) acting inside ``project_id``."""
        return cls(user_id=None, project_id=project_id, roles=("admin",))
