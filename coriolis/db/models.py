"""SQLAlchemy models. Column names follow the upstream API field names where they surface.

Every user-facing resource row carries ``project_id``; queries filter on it (see
``coriolis.db.api``) so one project never sees another's rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from coriolis import constants


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class TimestampMixin:
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, onupdate=utcnow)


# --- identity -----------------------------------------------------------------------------------
class Project(TimestampMixin, Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    domain_id: Mapped[str] = mapped_column(String(64), default="default")


class User(TimestampMixin, Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    domain_id: Mapped[str] = mapped_column(String(64), default="default")
    password_hash: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Tokens issued before this time (epoch seconds) are revoked: set when the password,
    # the enabled flag or a role assignment changes.
    tokens_valid_after: Mapped[float | None] = mapped_column(Float, nullable=True)


class RevokedToken(Base):
    """A token revoked before it expired (DELETE /identity/v3/auth/tokens); the row can go
    once the token expired."""

    __tablename__ = "revoked_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"),
                                            primary_key=True)
    role: Mapped[str] = mapped_column(String(64), primary_key=True)


# --- regions, services, endpoints ---------------------------------------------------------------
endpoint_regions = Table(
    "endpoint_regions",
    Base.metadata,
    Column("endpoint_id", ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True),
    Column("region_id", ForeignKey("regions.id", ondelete="CASCADE"), primary_key=True),
)

service_regions = Table(
    "service_regions",
    Base.metadata,
    Column("service_id", ForeignKey("services.id", ondelete="CASCADE"), primary_key=True),
    Column("region_id", ForeignKey("regions.id", ondelete="CASCADE"), primary_key=True),
)


class Region(TimestampMixin, Base):
    __tablename__ = "regions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    endpoints: Mapped[list[Endpoint]] = relationship(
        secondary=endpoint_regions, back_populates="regions")
    services: Mapped[list[Service]] = relationship(
        secondary=service_regions, back_populates="regions")


class Service(TimestampMixin, Base):
    """A worker (or other) service process, registered by hostname."""

    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("host", "binary", name="uq_services_host_binary"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    host: Mapped[str] = mapped_column(String(255))
    binary: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(255))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(32), default="UNKNOWN")
    providers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    specs: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_heartbeat: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    regions: Mapped[list[Region]] = relationship(
        secondary=service_regions, back_populates="services")


class Endpoint(TimestampMixin, Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Connection info, encrypted (AES-GCM) by coriolis.secrets; never stored in clear.
    connection_info_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    regions: Mapped[list[Region]] = relationship(
        secondary=endpoint_regions, back_populates="endpoints")


# --- transfer actions (migrations and replicas) -------------------------------------------------
class TransferAction(TimestampMixin, Base):
    """A migration or a replica: what to move, from where, to where.

    ``info`` holds the per-instance ``task_info`` that tasks read and extend
    (``{instance: {"export_info": ..., "volumes_info": ..., ...}}``).
    """

    __tablename__ = "transfer_actions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    type: Mapped[str] = mapped_column(String(32))  # constants.ACTION_TYPE_*
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    origin_endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"))
    destination_endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"))
    origin_minion_pool_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    destination_minion_pool_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    instance_osmorphing_minion_pool_mappings: Mapped[dict[str, Any]] = mapped_column(
        default=dict)
    instances: Mapped[list[Any]] = mapped_column(default=list)
    source_environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    destination_environment: Mapped[dict[str, Any]] = mapped_column(default=dict)
    network_map: Mapped[dict[str, Any]] = mapped_column(default=dict)
    storage_mappings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    user_scripts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_execution_status: Mapped[str] = mapped_column(
        String(64), default=constants.EXECUTION_STATUS_UNEXECUTED)
    reservation_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # replica only
    scenario: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # migration only
    replica_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    shutdown_instances: Mapped[bool] = mapped_column(Boolean, default=False)
    replication_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    skip_os_morphing: Mapped[bool] = mapped_column(Boolean, default=False)
    clone_disks: Mapped[bool] = mapped_column(Boolean, default=True)
    transfer_result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)

    executions: Mapped[list[Execution]] = relationship(
        back_populates="action", order_by="Execution.number", cascade="all, delete-orphan")


class Execution(TimestampMixin, Base):
    __tablename__ = "executions"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    action_id: Mapped[str] = mapped_column(
        ForeignKey("transfer_actions.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))  # constants.EXECUTION_TYPE_*
    status: Mapped[str] = mapped_column(String(64), default=constants.EXECUTION_STATUS_RUNNING)
    # A replica execution that deploys its transfer once COMPLETED (the newer API's
    # auto_deploy); the deployment is made in the transaction that completes it.
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    action: Mapped[TransferAction] = relationship(back_populates="executions")
    tasks: Mapped[list[Task]] = relationship(
        back_populates="execution", order_by="Task.index", cascade="all, delete-orphan")


class Task(TimestampMixin, Base):
    __tablename__ = "tasks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    execution_id: Mapped[str] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    instance: Mapped[str] = mapped_column(String(1024))
    task_type: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(64), default=constants.TASK_STATUS_SCHEDULED)
    depends_on: Mapped[list[Any]] = mapped_column(default=list)
    # on_error: cleanup that runs whatever happened once a parent completed ("finally").
    on_error: Mapped[bool] = mapped_column(Boolean, default=False)
    # on_error_only tasks start as EXECUTE_ON_ERROR_ONLY ("except").
    on_error_only: Mapped[bool] = mapped_column(Boolean, default=False)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    process_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exception_details: Mapped[str | None] = mapped_column(Text, nullable=True)
    execution: Mapped[Execution] = relationship(back_populates="tasks")
    progress_updates: Mapped[list[TaskProgressUpdate]] = relationship(
        order_by="TaskProgressUpdate.index", cascade="all, delete-orphan")
    events: Mapped[list[TaskEvent]] = relationship(
        order_by="TaskEvent.index", cascade="all, delete-orphan")


class TaskProgressUpdate(TimestampMixin, Base):
    __tablename__ = "task_progress_updates"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


class TaskEvent(TimestampMixin, Base):
    __tablename__ = "task_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[str] = mapped_column(String(20), default=constants.TASK_EVENT_INFO)
    message: Mapped[str] = mapped_column(Text)


class ReplicaSchedule(TimestampMixin, Base):
    __tablename__ = "replica_schedules"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    replica_id: Mapped[str] = mapped_column(
        ForeignKey("transfer_actions.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    expiration_date: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    shutdown_instance: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    trust_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_run_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Secret(TimestampMixin, Base):
    """A secret of the embedded Barbican-v1 subset (e.g. an endpoint's connection info)."""

    __tablename__ = "secrets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    content_type: Mapped[str] = mapped_column(String(255), default="text/plain")
    payload_encrypted: Mapped[bytes] = mapped_column(LargeBinary)


# --- minion pools -------------------------------------------------------------------------------
class MinionPool(TimestampMixin, Base):
    """Pre-allocated helper machines of one endpoint (server-contract §6.1); ``status`` one
    of ``constants.POOL_STATUS_*``, ``minion_max_idle_time`` in seconds."""

    __tablename__ = "minion_pools"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    project_id: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    name: Mapped[str] = mapped_column(String(255))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"))
    platform: Mapped[str] = mapped_column(String(32))  # source | destination
    os_type: Mapped[str] = mapped_column(String(32))
    environment_options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    minimum_minions: Mapped[int] = mapped_column(Integer, default=1)
    maximum_minions: Mapped[int] = mapped_column(Integer, default=1)
    minion_max_idle_time: Mapped[int] = mapped_column(Integer, default=1)
    minion_retention_strategy: Mapped[str] = mapped_column(String(32), default="delete")
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(64), default=constants.POOL_STATUS_DEALLOCATED)
    shared_resources: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The operation the pool manager runs (allocate, deallocate...), resumed after a restart.
    operation: Mapped[str | None] = mapped_column(String(32), nullable=True)
    machines: Mapped[list[MinionMachine]] = relationship(
        back_populates="pool", order_by="MinionMachine.created_at",
        cascade="all, delete-orphan")
    events: Mapped[list[MinionPoolEvent]] = relationship(
        order_by="MinionPoolEvent.index", cascade="all, delete-orphan")


class MinionMachine(TimestampMixin, Base):
    """One helper machine of a pool; its secrets (connection info with agent keys) are
    encrypted; ``provider_properties`` is the provider's own state (no secrets)."""

    __tablename__ = "minion_machines"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("minion_pools.id", ondelete="CASCADE"), index=True)
    allocation_status: Mapped[str] = mapped_column(
        String(32), default=constants.MINION_STATUS_ALLOCATING)
    power_status: Mapped[str] = mapped_column(String(32), default=constants.MINION_POWER_UNKNOWN)
    provider_properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    allocated_action: Mapped[str | None] = mapped_column(String(36), nullable=True)
    allocated_instance: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    pool: Mapped[MinionPool] = relationship(back_populates="machines")


class MinionPoolEvent(TimestampMixin, Base):
    __tablename__ = "minion_pool_events"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    pool_id: Mapped[str] = mapped_column(
        ForeignKey("minion_pools.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer, default=0)
    level: Mapped[str] = mapped_column(String(20), default=constants.TASK_EVENT_INFO)
    message: Mapped[str] = mapped_column(Text)
