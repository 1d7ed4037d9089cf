"""What transfers need of pools: the checks of the pools a transfer names, and where a task
finds its reserved minion's agent key."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coriolis import constants as c
from coriolis import exceptions
from coriolis.db import models
from coriolis.minions.manager import serving
from coriolis.providers import registry
from coriolis.providers.base import MinionOsMorphingProvider

MINION_KEY_REF = "coriolis_minion.key"
"""Where a task's destination connection info carries the reserved minion's agent key (the
conductor puts it there when it sends the task; it is never stored with the transfer)."""
OSMORPHING_KEY_REF = "coriolis_osmorphing_minion.key"
"""The same for the instance's OS-morphing minion."""

SOURCE_MINION_KEY_REF = "coriolis_source_minion.key"
"""Where a task's SOURCE connection info carries the instance's source minion's agent key."""

ROLE_DESTINATION, ROLE_OSMORPHING = "destination_minion", "osmorphing_minion"
ROLE_SOURCE = "source_minion"
KEY_REFS = {ROLE_DESTINATION: MINION_KEY_REF, ROLE_OSMORPHING: OSMORPHING_KEY_REF,
            ROLE_SOURCE: SOURCE_MINION_KEY_REF}
"""The roles a reserved minion plays for an instance (its key in the instance's task info:
``{"machine_id", "pool_id"}``) and where its agent key travels: in the source connection
info for the ``SOURCE_ROLES``, the destination's for the others."""
SOURCE_ROLES = frozenset({ROLE_SOURCE})


def minion_needs(action: models.TransferAction, execution_type: str,
                 instances: list[str]) -> dict[str, dict[str, list[str]]]:
    """The minions an execution of ``action`` needs: ``{pool id: {instance: [roles]}}``.
    Executions that read the source disks and write the destination disks (migration,
    replica execution) need one of the origin pool and one of the destination pool per
    instance; those that morph the guest (migration, replica deploy,
    unless ``skip_os_morphing``) one of each instance's OS-morphing pool. An instance needing
    both of one pool gets one machine for both."""
    needs: dict[str, dict[str, list[str]]] = {}
    copies = execution_type in (c.EXECUTION_TYPE_MIGRATION, c.EXECUTION_TYPE_REPLICA_EXECUTION)
    for pool_id, role in ((action.origin_minion_pool_id, ROLE_SOURCE),
                          (action.destination_minion_pool_id, ROLE_DESTINATION)):
        if pool_id and copies:
            for name in instances:
                needs.setdefault(pool_id, {}).setdefault(name, []).append(role)
    mapping = action.instance_osmorphing_minion_pool_mappings or {}
    if mapping and not action.skip_os_morphing and execution_type in (
            c.EXECUTION_TYPE_MIGRATION, c.EXECUTION_TYPE_REPLICA_DEPLOY):
        for name in instances:
            if mapping.get(name):
                needs.setdefault(mapping[name], {}).setdefault(name, []).append(
                    ROLE_OSMORPHING)
    return needs


def check_transfer_pools(session: Session, project_id: str, origin: models.Endpoint,
                         destination: models.Endpoint, instances: list[str],
                         origin_pool_id: str | None, destination_pool_id: str | None,
                         osmorphing: dict[str, str]) -> None:
    """The pools a transfer names (server-contract §2.3): each exists in the project, belongs
    to the matching endpoint, is of the right platform, Linux for the transfer pools,
    ALLOCATED, and has ``maximum_minions`` ≥ the instances it serves. ``InvalidInput`` (400)
    naming the field, the pool and the reason."""
    wanted: list[tuple[str, str, models.Endpoint, str, int]] = []
    if origin_pool_id:
        wanted.append(("origin_minion_pool_id", origin_pool_id, origin, "source",
                       len(instances)))
    if destination_pool_id:
        wanted.append(("destination_minion_pool_id", destination_pool_id, destination,
                       "destination", len(instances)))
    for pool_id in sorted(set(osmorphing.values())):
        count = sum(1 for p in osmorphing.values() if p == pool_id)
        wanted.append(("instance_osmorphing_minion_pool_mappings", pool_id, destination,
                       "destination", count))
    for field_name, pool_id, endpoint, platform, count in wanted:
        pool = session.get(models.MinionPool, pool_id)
        what = f"{field_name}: minion pool {pool_id}"
        if pool is None or pool.project_id != project_id:
            raise exceptions.InvalidInput(f"{what} could not be found")
        if pool.endpoint_id != endpoint.id:
            raise exceptions.InvalidInput(
                f"{what} belongs to endpoint {pool.endpoint_id}, not to the {platform} "
                f"endpoint '{endpoint.name}' of this transfer")
        if pool.platform != platform:
            raise exceptions.InvalidInput(f"{what} is a {pool.platform} pool, not a "
                                          f"{platform} pool")
        if field_name != "instance_osmorphing_minion_pool_mappings" \
                and pool.os_type != "linux":
            raise exceptions.InvalidInput(f"{what} is a {pool.os_type} pool; transfer pools "
                                          "must be 'linux'")
        if not serving(pool):
            raise exceptions.InvalidInput(f"{what} is {pool.operation or pool.status}, not "
                                          "ALLOCATED (allocate it first)")
        if pool.maximum_minions < count:
            raise exceptions.InvalidInput(
                f"{what} has at most {pool.maximum_minions} minion(s), fewer than the "
                f"{count} instance(s) it would serve")
        if field_name == "instance_osmorphing_minion_pool_mappings":
            provider = registry.get_provider(endpoint.type)
            if not isinstance(provider, MinionOsMorphingProvider):
                # Refused rather than accepted and ignored.
                raise exceptions.InvalidInput(
                    f"{what}: the {endpoint.type} provider cannot morph guests on pool "
                    "minions; without a mapping the destination's own OS-morphing resources "
                    "are used")
