"""Bodies of migrations, deployments, replicas, executions, schedules and their actions, as
python-coriolisclient sends them (shared/reference/coriolis-v1-api.md §3.3, §3.4)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from coriolis.api.schemas.common import (
    ABSENT,
    Body,
    Description,
    FutureUtcDateTime,
    Id,
    JsonObject,
    LongName,
    Script,
)
from coriolis.scheduling import cron

# c.VALID_OS_TYPES, spelled out for the type checker.
OsType = Literal["bsd", "linux", "osx", "solaris", "windows"]
InstanceName = LongName
INSTANCES_MAX = 1000


class BackendMapping(Body):
    source: Description
    destination: Description


class DiskMapping(Body):
    disk_id: Description
    destination: Description


class StorageMappings(Body):
    """Which destination storage each disk goes to: per disk, else per source backend,
    else ``default``."""

    default: Description | None = None
    backend_mappings: list[BackendMapping] | None = None
    disk_mappings: list[DiskMapping] | None = None


class UserScripts(Body):
    """Scripts run in the guest after OS morphing; ``null`` removes one (on update)."""

    global_: dict[OsType, Script | None] | None = Field(None, alias="global")
    instances: dict[InstanceName, Script | None] | None = None


class TransferUpdate(Body):
    """What a replica update may change (PUT /replicas/{id}, body R2)."""

    source_environment: JsonObject | None = None
    destination_environment: JsonObject | None = None
    network_map: JsonObject | None = None
    storage_mappings: StorageMappings | None = None
    notes: Description | None = None
    user_scripts: UserScripts | None = None
    origin_minion_pool_id: Id | None = None
    destination_minion_pool_id: Id | None = None
    instance_osmorphing_minion_pool_mappings: dict[InstanceName, Id] | None = None


class TransferCreate(TransferUpdate):
    """The fields migrations and replicas share (bodies M1 and R1)."""

    origin_endpoint_id: Id
    destination_endpoint_id: Id
    instances: Annotated[list[InstanceName], Field(min_length=1, max_length=INSTANCES_MAX)]


class MigrationCreate(TransferCreate):
    """A new migration (body M1)."""

    skip_os_morphing: bool | None = None
    shutdown_instances: bool | None = None
    replication_count: Annotated[int, Field(ge=1, le=10)] | None = None


class ReplicaCreate(TransferCreate):
    """A new replica (body R1)."""

    scenario: Literal["replica", "live_migration"] | None = None


class ReplicaDeploy(Body):
    """A migration from a replica's disks (body M2; POST /deployments). The pool ids (the
    seed README's ``migration deploy replica --origin-minion-pool-id ...``) are recorded on
    the deployment; as upstream's, a deploy's tasks use only the OS-morphing mappings."""

    replica_id: Id
    origin_minion_pool_id: Id | None = None
    destination_minion_pool_id: Id | None = None
    clone_disks: bool | None = None
    force: bool | None = None
    skip_os_morphing: bool | None = None
    user_scripts: UserScripts | None = None
    instance_osmorphing_minion_pool_mappings: dict[InstanceName, Id] | None = None


class DeploymentCreate(ReplicaDeploy):
    """POST /deployments: the older generation names the replica ``replica_id``, the newer
    ``transfer_id`` (the same thing); exactly one of them."""

    replica_id: Id | None = None  # type: ignore[assignment]
    transfer_id: Id | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DeploymentCreate:
        if (self.replica_id is None) == (self.transfer_id is None):
            raise ValueError("give transfer_id (or replica_id), not both")
        return self


class TransferCreate2(ReplicaCreate):
    """A new transfer (POST /transfers, the newer generation's replica): ``scenario``
    ``replica`` or ``live_migration``; ``clone_disks`` and ``skip_os_morphing`` are the
    defaults of its deployments."""

    clone_disks: bool | None = None
    skip_os_morphing: bool | None = None


def _migration_kind(value: Any) -> str:
    """As upstream: a body with ``replica_id`` deploys a replica."""
    deploy = isinstance(value, ReplicaDeploy) or isinstance(value, dict) and "replica_id" in value
    return "deploy" if deploy else "new"


# The tags are dropped from error locations (coriolis.api.errors).
UNION_TAGS = frozenset({"new", "deploy"})
AnyMigration = Annotated[Annotated[MigrationCreate, Tag("new")]
                         | Annotated[ReplicaDeploy, Tag("deploy")],
                         Discriminator(_migration_kind)]


class MigrationRequest(Body):
    migration: AnyMigration


class DeploymentRequest(Body):
    deployment: DeploymentCreate


class TransferRequest(Body):
    transfer: TransferCreate2


class TransferUpdate2(TransferUpdate):
    """What a transfer update may change (PUT /transfers/{id}): a replica update's fields
    plus the defaults of its deployments."""

    clone_disks: bool | None = None
    skip_os_morphing: bool | None = None


class TransferUpdateRequest(Body):
    transfer: TransferUpdate2


class ReplicaRequest(Body):
    replica: ReplicaCreate


class ReplicaUpdateRequest(Body):
    replica: TransferUpdate


class ExecutionCreate(Body):
    shutdown_instances: bool = False


class TransferExecutionCreate(ExecutionCreate):
    """The newer generation's execution body; ``auto_deploy``: once the execution
    COMPLETES, the server deploys the transfer with its stored ``clone_disks`` and
    ``skip_os_morphing`` (a failed or canceled execution deploys nothing)."""

    auto_deploy: bool = False


class ExecutionRequest(Body):
    execution: ExecutionCreate | None = None


class TransferExecutionRequest(Body):
    execution: TransferExecutionCreate | None = None


class CancelOptions(Body):
    force: bool = False


class CancelAction(Body):
    """``{"cancel": null}`` or ``{"cancel": {"force": bool}}``."""

    cancel: CancelOptions | None


class ReplicaAction(Body):
    """``{"delete-disks": null}``: delete the replica's destination disks."""

    delete_disks: JsonObject | None = Field(alias="delete-disks")


class Cron(Body):
    """UTC fields of a schedule; those not given match every value. Each is an exact
    value (upstream's ints) or cron syntax: ``*``, ``*/N``, ``A-B``, ``A-B/N``, lists
    (``coriolis.scheduling.cron``); dow 0 is Monday."""

    minute: int | str | None = None
    hour: int | str | None = None
    dom: int | str | None = None
    month: int | str | None = None
    dow: int | str | None = None

    @field_validator("minute", "hour", "dom", "month", "dow")
    @classmethod
    def _cron_syntax(cls, value: int | str | None, info: ValidationInfo) -> int | str | None:
        try:
            cron.values(str(info.field_name), value)
        except cron.CronError as exc:
            raise ValueError(str(exc).split(": ", 1)[-1]) from None
        return value


class ScheduleUpdate(Body):
    """A schedule's fields, unwrapped (as upstream). ``expiration_date``: ISO 8601, in the
    future; ``null`` clears it."""

    schedule: Cron = ABSENT
    enabled: bool = ABSENT
    shutdown_instance: bool = ABSENT
    expiration_date: FutureUtcDateTime | None = None
    # The newer generation's flag: each scheduled execution deploys the transfer once it
    # completes (as ``TransferExecutionCreate.auto_deploy``).
    auto_deploy: bool = ABSENT


class ScheduleCreate(ScheduleUpdate):
    schedule: Cron
    enabled: bool = True
    shutdown_instance: bool = False
    auto_deploy: bool = False

    @field_validator("schedule")
    @classmethod
    def _some_field(cls, cron: Cron) -> Cron:
        if all(value is None for _, value in cron):
            raise ValueError("give at least one of minute, hour, dom, month, dow")
        return cron
