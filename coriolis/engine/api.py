"""The conductor as the API sees it. Every method checks that the resources it touches belong
to ``ctx.project_id`` (``NotFound`` otherwise), validates its input (``InvalidInput`` naming the
field), and returns the id of what it created. The API serialises rows itself
(``coriolis.api.views``)."""

from __future__ import annotations

from typing import Any, Protocol

from coriolis.context import RequestContext


class ConductorAPI(Protocol):
    # --- migrations -----------------------------------------------------------------------------
    def create_migration(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        """Body M1 (see shared/reference). Validates endpoints, instances (they must exist at the
        source), environments against the provider schemas, storage backends and networks at
        the destination, all before any data moves; then starts the execution."""
        ...

    def deploy_replica(self, ctx: RequestContext, body: dict[str, Any]) -> str:
        """Body M2: a migration from a replica's disks; returns the new migration's id."""
        ...

    # --- replicas -------------------------------------------------------------------------------
    def create_replica(self, ctx: RequestContext, body: dict[str, Any]) -> str: ...

    def update_replica(self, ctx: RequestContext, replica_id: str, body: dict[str, Any]) -> str:
        """Returns the id of the ``replica_update`` execution."""
        ...

    def execute_replica(
        self, ctx: RequestContext, replica_id: str, shutdown_instances: bool,
        auto_deploy: bool = False,
    ) -> str:
        """Returns the execution's id; ``auto_deploy``: deploy the replica (its stored
        deployment defaults) in the transaction that completes the execution."""
        ...

    def delete_replica_disks(self, ctx: RequestContext, replica_id: str) -> str: ...

    # --- shared ---------------------------------------------------------------------------------
    def cancel_execution(self, ctx: RequestContext, execution_id: str, force: bool) -> None: ...

    def delete_action(self, ctx: RequestContext, action_id: str) -> None:
        """Delete a migration or replica; ``InvalidState`` while an execution is active."""
        ...

    def delete_execution(self, ctx: RequestContext, execution_id: str) -> None: ...

    # --- endpoint operations (run on a worker) --------------------------------------------------
    def endpoint_call(
        self, ctx: RequestContext, endpoint_id: str, operation: str,
        env: dict[str, Any] | None = None, **kwargs: Any,
    ) -> Any:
        """Provider ``operation`` (``validate_connection``, ``list_instances``,
        ``get_instance``, ``list_networks``, ``list_storage``, ``list_destination_options``,
        ``list_source_options``) for the endpoint, on a worker."""
        ...
