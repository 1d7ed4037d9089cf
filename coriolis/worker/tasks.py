"""One runner per task type. A runner reads the instance's task_info and returns what it adds
to it; it talks to the platforms only through the provider interfaces."""

from __future__ import annotations

import hashlib
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from coriolis import constants as c
from coriolis import exceptions
from coriolis.bus.base import TaskEventSink, TaskMessage
from coriolis.osmorphing import appliance
from coriolis.osmorphing.helper import helper_address, job_id_for, morph_on_helper
from coriolis.osmorphing.isolated import MorphRequest, morph_in_child
from coriolis.providers import registry
from coriolis.transfer.copy import copy_disk
from coriolis.transfer.manifest import UNKNOWN, ZERO, BlockManifest
from coriolis.transfer.remote import RemoteDiskWriter
from coriolis.worker import faults

# Change-detection granularity of block manifests (copies still move 4 MiB chunks).
MANIFEST_BLOCK = 64 * 1024
MiB = 1024 * 1024

JSON = dict[str, Any]


class TaskContext:
    def __init__(self, message: TaskMessage, sink: TaskEventSink, cancel_flag: threading.Event,
                 data_dir: Path) -> None:
        self.message = message
        self.instance = message.instance
        self.info: JSON = message.task_info
        self.origin = registry.get_transfer_provider(message.origin.platform)
        self.destination = registry.get_transfer_provider(message.destination.platform)
        self.origin_conn = message.origin.connection_info
        self.origin_env = message.origin.environment
        self.dest_conn = message.destination.connection_info
        self.dest_env = message.destination.environment
        self.data_dir = data_dir
        self._sink = sink
        self._cancel = cancel_flag

    def progress(self, current: int, total: int | None, message: str) -> None:
        self._sink.task_progress(self.message.task_id, current, total, message)

    def event(self, message: str, level: str = c.TASK_EVENT_INFO) -> None:
        self._sink.task_event(self.message.task_id, level, message)

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def require(self, key: str) -> Any:
        value = self.info.get(key)
        if value is None:
            raise exceptions.ProviderError(f"task_info of {self.instance} lacks '{key}'")
        return value


Runner = Callable[[TaskContext], JSON]
TASK_RUNNERS: dict[str, Runner] = {}


def runs(*task_types: str) -> Callable[[Runner], Runner]:
    def register(fn: Runner) -> Runner:
        for task_type in task_types:
            TASK_RUNNERS[task_type] = fn
        return fn
    return register


def _nothing(ctx: TaskContext) -> JSON:
    return {}


for _type in (c.TASK_TYPE_DEPLOY_MIGRATION_TARGET_RESOURCES,
              c.TASK_TYPE_DEPLOY_REPLICA_TARGET_RESOURCES,
              c.TASK_TYPE_DELETE_MIGRATION_TARGET_RESOURCES,
              c.TASK_TYPE_DELETE_REPLICA_TARGET_RESOURCES,
              c.TASK_TYPE_CLEANUP_INSTANCE_SOURCE_STORAGE,
              c.TASK_TYPE_DELETE_REPLICA_SOURCE_DISK_SNAPSHOTS):
    TASK_RUNNERS[_type] = _nothing


@runs(c.TASK_TYPE_GET_INSTANCE_INFO)
def get_instance_info(ctx: TaskContext) -> JSON:
    return {"export_info": ctx.origin.get_instance(ctx.origin_conn, ctx.origin_env,
                                                   ctx.instance)}


@runs(c.TASK_TYPE_VALIDATE_MIGRATION_SOURCE_INPUTS, c.TASK_TYPE_VALIDATE_REPLICA_SOURCE_INPUTS,
      c.TASK_TYPE_UPDATE_SOURCE_REPLICA)
def validate_source(ctx: TaskContext) -> JSON:
    ctx.origin.validate_source_inputs(ctx.origin_conn, ctx.origin_env, ctx.instance)
    return {}


@runs(c.TASK_TYPE_VALIDATE_MIGRATION_DESTINATION_INPUTS)
def validate_migration_destination(ctx: TaskContext) -> JSON:
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"))
    return {}


@runs(c.TASK_TYPE_VALIDATE_REPLICA_DESTINATION_INPUTS, c.TASK_TYPE_UPDATE_DESTINATION_REPLICA)
def validate_replica_destination(ctx: TaskContext) -> JSON:
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"),
                                                check_name_clash=False)
    return {}


@runs(c.TASK_TYPE_VALIDATE_REPLICA_DEPLOYMENT_INPUTS)
def validate_deployment(ctx: TaskContext) -> JSON:
    ctx.require("volumes_info")
    ctx.destination.validate_destination_inputs(ctx.dest_conn, ctx.dest_env,
                                                ctx.require("export_info"))
    return {}


@runs(c.TASK_TYPE_CREATE_INSTANCE_DISKS, c.TASK_TYPE_DEPLOY_REPLICA_DISKS)
def create_disks(ctx: TaskContext) -> JSON:
    """Replica disks that exist are first brought to a committed state (``_settle``)."""
    volumes = ctx.info.get("volumes_info") or []
    if ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_DISKS and volumes:
        volumes = _settle(ctx, volumes)
    volumes = ctx.destination.create_disks(ctx.dest_conn, ctx.dest_env,
                                           ctx.require("export_info"), volumes,
                                           transfer_id=ctx.info.get("action_id"))
    ctx.event(f"{len(volumes)} destination disk(s) ready")
    return {"volumes_info": volumes}


def _committed_tokens(ctx: TaskContext) -> list[str]:
    """The source change-tracking tokens of the tracking point in force: those the replica
    disks were last committed with (a pending one is not in force)."""
    return [v["cbt"] for v in ctx.info.get("volumes_info") or [] if v.get("cbt")]


@runs(c.TASK_TYPE_DEPLOY_MIGRATION_SOURCE_RESOURCES, c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES)
def deploy_source_resources(ctx: TaskContext) -> JSON:
    """Replicas (not migrations) track changes natively where the platform can."""
    replica = ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_SOURCE_RESOURCES
    return {"source_resources": ctx.origin.deploy_source_resources(
        ctx.origin_conn, ctx.origin_env, ctx.require("export_info"),
        tracking_id=ctx.info.get("action_id") if replica else None,
        transfer_id=ctx.info.get("action_id"), keep_tokens=_committed_tokens(ctx))}


@runs(c.TASK_TYPE_DELETE_MIGRATION_SOURCE_RESOURCES, c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES)
def delete_source_resources(ctx: TaskContext) -> JSON:
    """Keeps the change-tracking tokens of the tracking point in force: the new ones after a
    committed execution, the previous ones after a rolled-back one (the replica graph runs
    this after the commit or the roll-back)."""
    replica = ctx.message.task_type == c.TASK_TYPE_DELETE_REPLICA_SOURCE_RESOURCES
    ctx.origin.delete_source_resources(ctx.origin_conn, ctx.origin_env, {
        **(ctx.info.get("source_resources") or {}), "keep_tokens": _committed_tokens(ctx),
        "export_info": ctx.info.get("export_info"), "transfer_id": ctx.info.get("action_id"),
        "tracking_id": ctx.info.get("action_id") if replica else None})
    return {"source_resources": {}}


@runs(c.TASK_TYPE_SHUTDOWN_INSTANCE)
def shutdown_instance(ctx: TaskContext) -> JSON:
    ctx.origin.shutdown_instance(ctx.origin_conn, ctx.origin_env, ctx.require("export_info"))
    ctx.event(f"instance {ctx.instance} shut down")
    return {}


def _manifest_dir(ctx: TaskContext, volume: JSON) -> Path:
    """The block manifests of one destination volume on this worker (a recreated volume
    starts anew), one file per generation."""
    ident = f"{volume.get('path')}|{volume['disk_id']}"
    return ctx.data_dir / "manifests" / hashlib.sha256(ident.encode()).hexdigest()[:24]


def _manifest_path(ctx: TaskContext, volume: JSON, generation: str | None = None) -> Path:
    """The manifest of a generation (default: the committed one, ``manifest_generation``).
    A generation is the execution whose copy it describes; the committed one moves only when
    that execution commits, so a worker never trusts a manifest that a rolled-back copy, or
    another worker's copy, made stale (it resends everything instead)."""
    gen = generation if generation is not None else volume.get("manifest_generation", "")
    return _manifest_dir(ctx, volume) / f"{gen or 'initial'}.manifest"


def _prune_manifests(ctx: TaskContext, volume: JSON) -> None:
    """Drop the manifests of every generation but the committed one."""
    keep = _manifest_path(ctx, volume)
    folder = keep.parent
    for file in folder.glob("*") if folder.is_dir() else []:
        if file != keep:
            file.unlink(missing_ok=True)


def _apply_outcome(ctx: TaskContext, outcome: JSON) -> list[JSON]:
    """Move each volume's change-tracking point (source bitmap token, manifest generation)
    to what its pending copy recorded when the disks committed that copy's execution, or
    drop it when they did not; say what a settle found."""
    volumes = []
    for volume in outcome["volumes_info"]:
        volume = dict(volume)
        pending = volume.pop("pending", None)
        if pending and pending["execution"] == outcome["committed"]:
            if pending.get("cbt"):
                volume["cbt"] = pending["cbt"]
            volume["manifest_generation"] = pending["manifest_generation"]
            volume["manifest"] = str(_manifest_path(ctx, volume))
        _prune_manifests(ctx, volume)
        volumes.append(volume)
    if outcome.get("rolled_back"):
        ctx.event(f"Rolled back what execution {outcome['rolled_back']} wrote to the replica "
                  f"disks and never committed ({outcome.get('bytes_restored', 0) / MiB:.1f} "
                  "MiB restored from its undo journal, or its disk copy or qcow2 snapshot "
                  "put back): they hold the last committed execution's data",
                  c.TASK_EVENT_WARNING)
    elif outcome.get("finished_commit"):
        ctx.event(f"Finished the interrupted commit of execution {outcome['committed']} on "
                  "the replica disks (its snapshots dropped)", c.TASK_EVENT_WARNING)
    return volumes


def _settle(ctx: TaskContext, volumes: list[JSON]) -> list[JSON]:
    """Bring replica disks to a committed state before anything else touches them: an undo
    journal or qcow2 snapshot that an interrupted execution left is rolled back (or, if that
    execution had committed, dropped)."""
    return _apply_outcome(ctx, ctx.destination.restore_disk_snapshots(
        ctx.dest_conn, ctx.dest_env, volumes))


@runs(c.TASK_TYPE_REPLICATE_DISKS)
def replicate_disks(ctx: TaskContext) -> JSON:
    """Copy every disk, sending only blocks whose hash differs from what the destination
    holds according to the volume's block manifest (a new volume holds zeroes). The new
    change-tracking point (this execution's bitmap token and manifest) is recorded as the
    volume's ``pending`` one: it is in force only once the execution commits."""
    export_info = ctx.require("export_info")
    volumes = [dict(v) for v in ctx.require("volumes_info")]
    sources = ctx.info.get("source_resources") or {}
    execution = ctx.message.execution_id
    for volume in volumes:
        disk_id = volume["disk_id"]
        committed_file = _manifest_path(ctx, volume)
        # A copy run again after a crash goes on from its own manifest, if it saved one.
        work_file = _manifest_path(ctx, volume, execution)
        work_file.parent.mkdir(parents=True, exist_ok=True)
        tracking = (sources.get("cbt") or {}).get(disk_id)
        since = volume.get("cbt") if tracking else None
        reader = ctx.origin.open_disk_reader(ctx.origin_conn, ctx.origin_env, export_info,
                                             disk_id, sources, since=since)
        try:
            transfer_id = re.sub(r"[^a-z0-9_-]", "_", f"{ctx.message.task_id}-{disk_id}".lower())
            writer = ctx.destination.open_disk_writer(ctx.dest_conn, ctx.dest_env, volume,
                                                      transfer_id=transfer_id)
            remote = writer if isinstance(writer, RemoteDiskWriter) else None
            if remote:
                ctx.event(f"Disk {disk_id}: writing through the writer agent at "
                          f"{remote.agent.url}")
            try:
                known = next((f for f in (work_file, committed_file) if f.exists()), None)
                if known is not None:
                    manifest = BlockManifest.load_or_new(known, MANIFEST_BLOCK, reader.size)
                else:  # a new (blank) volume, or one whose manifest was lost: resend all
                    manifest = BlockManifest(MANIFEST_BLOCK, reader.size,
                                             fill=UNKNOWN if volume.get("manifest") else ZERO)

                def progress(done: int, scan_total: int, rate: float,
                             _id: str = disk_id) -> None:
                    ctx.progress(done, scan_total or 1,
                                 f"Disk {_id}: {done / MiB:.1f} of {scan_total / MiB:.1f} MiB "
                                 f"allocated data scanned, {rate / MiB:.1f} MiB/s")
                    if done:
                        faults.crash_point(ctx.message.task_type)

                try:
                    stats = copy_disk(reader, writer, since=since, manifest=manifest,
                                      progress=progress, cancel=ctx.cancelled,
                                      dest_is_blank=False)
                finally:
                    # Even after a failure the manifest describes the destination exactly
                    # (blocks being written are UNKNOWN), so a re-run here resends only
                    # what it must.
                    manifest.save(work_file)
            finally:
                writer.close()
        finally:
            reader.close()
        changed = stats.bytes_written + stats.bytes_zeroed
        volume["pending"] = {"execution": execution, "manifest_generation": execution,
                             "cbt": tracking["token"] if tracking else None}
        volume.update({"bytes_scanned": stats.bytes_scanned,
                       "bytes_changed": changed, "bytes_sent": stats.bytes_written,
                       "bytes_unchanged": stats.bytes_skipped_unchanged})
        # The last progress update of a disk is its summary (the CLI shows progress updates).
        total = stats.bytes_scanned or 1
        ctx.progress(total, total,
                     f"Disk {disk_id}: scanned {stats.bytes_scanned / MiB:.1f} MiB, changed "
                     f"{changed / MiB:.1f} MiB, sent {stats.bytes_written / MiB:.1f} MiB "
                     f"in {stats.seconds:.2f}s" + (
                         f" ({remote.stats.bytes_on_wire / MiB:.1f} MiB on the wire, "
                         f"{stats.bytes_resumed / MiB:.1f} MiB resumed)" if remote else ""))
    if not any(v.get("snapshot") for v in volumes):
        # A migration's copy (no snapshot, nothing to commit): in force at once.
        return {"volumes_info": _apply_outcome(ctx, {"volumes_info": volumes,
                                                     "committed": execution})}
    return {"volumes_info": volumes}


@runs(c.TASK_TYPE_CREATE_REPLICA_DISK_SNAPSHOTS)
def snapshot_disks(ctx: TaskContext) -> JSON:
    """Settle the replica disks, then snapshot them for this execution; for a deploy on the
    replica disks themselves (a deploy's task_info names its ``replica_id``; ``clone_disks``
    false), a snapshot that undoes any write, not only the disk writer's."""
    in_place = bool(ctx.info.get("replica_id")) and not ctx.info.get("clone_disks", True)
    outcome = ctx.destination.snapshot_disks(ctx.dest_conn, ctx.dest_env,
                                             ctx.require("volumes_info"),
                                             snapshot_id=ctx.message.execution_id,
                                             for_deploy=in_place)
    return {"volumes_info": _apply_outcome(ctx, outcome)}


@runs(c.TASK_TYPE_RESTORE_REPLICA_DISK_SNAPSHOTS)
def restore_snapshots(ctx: TaskContext) -> JSON:
    """Roll the replica disks back to the last committed execution, unless this execution
    committed already (then there is nothing to roll back)."""
    outcome = ctx.destination.restore_disk_snapshots(ctx.dest_conn, ctx.dest_env,
                                                     ctx.require("volumes_info"))
    volumes = _apply_outcome(ctx, {**outcome, "rolled_back": None})
    if outcome["rolled_back"]:
        ctx.event("replica disks rolled back to the last completed execution")
    else:
        ctx.event("nothing to roll back: the replica disks hold a committed execution")
    return {"volumes_info": volumes}


@runs(c.TASK_TYPE_DELETE_REPLICA_TARGET_DISK_SNAPSHOTS)
def delete_snapshots(ctx: TaskContext) -> JSON:
    """The commit point of a replica execution: its writes stay, and its change-tracking
    point comes into force."""
    outcome = ctx.destination.delete_disk_snapshots(ctx.dest_conn, ctx.dest_env,
                                                    ctx.require("volumes_info"))
    return {"volumes_info": _apply_outcome(ctx, outcome)}


@runs(c.TASK_TYPE_DEPLOY_INSTANCE_RESOURCES, c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES)
def deploy_instance(ctx: TaskContext) -> JSON:
    clone = (ctx.message.task_type == c.TASK_TYPE_DEPLOY_REPLICA_INSTANCE_RESOURCES
             and bool(ctx.info.get("clone_disks", True)))
    return {"instance_deployment_info": ctx.destination.deploy_instance(
        ctx.dest_conn, ctx.dest_env, ctx.require("export_info"), ctx.require("volumes_info"),
        clone_disks=clone, transfer_id=ctx.info.get("action_id"))}


@runs(c.TASK_TYPE_FINALIZE_INSTANCE_DEPLOYMENT, c.TASK_TYPE_FINALIZE_REPLICA_INSTANCE_DEPLOYMENT)
def finalize(ctx: TaskContext) -> JSON:
    result = ctx.destination.finalize_instance(ctx.dest_conn, ctx.dest_env,
                                               ctx.require("instance_deployment_info"))
    ctx.event(f"instance {ctx.instance} deployed")
    return {"transfer_result": result}


@runs(c.TASK_TYPE_CLEANUP_FAILED_INSTANCE_DEPLOYMENT,
      c.TASK_TYPE_CLEANUP_FAILED_REPLICA_INSTANCE_DEPLOYMENT)
def cleanup_failed_instance(ctx: TaskContext) -> JSON:
    ctx.destination.cleanup_failed_instance(ctx.dest_conn, ctx.dest_env,
                                            ctx.info.get("instance_deployment_info") or {})
    return {"instance_deployment_info": None}


@runs(c.TASK_TYPE_CLEANUP_INSTANCE_TARGET_STORAGE, c.TASK_TYPE_DELETE_REPLICA_DISKS)
def delete_disks(ctx: TaskContext) -> JSON:
    volumes = ctx.info.get("volumes_info") or []
    ctx.destination.delete_disks(ctx.dest_conn, ctx.dest_env, volumes)
    for volume in volumes:
        shutil.rmtree(_manifest_dir(ctx, volume), ignore_errors=True)
    ctx.event(f"{len(volumes)} destination disk(s) deleted")
    return {"volumes_info": []}


@runs(c.TASK_TYPE_DEPLOY_OS_MORPHING_RESOURCES)
def deploy_os_morphing_resources(ctx: TaskContext) -> JSON:
    appliance.load_guestfs()  # a worker without libguestfs says so before anything else
    resources = ctx.destination.deploy_os_morphing_resources(
        ctx.dest_conn, ctx.dest_env, ctx.require("instance_deployment_info"))
    ctx.event(f"{len(resources['disks'])} disk(s) of the new instance ready for OS morphing")
    return {"os_morphing_resources": resources}


@runs(c.TASK_TYPE_OS_MORPHING)
def os_morphing(ctx: TaskContext) -> JSON:
    """Open the new instance's disks in a libguestfs appliance and morph the guest for the
    destination; every change is a task event. The appliance runs on this worker, or on the
    resources' ``helper`` (a writer agent beside the disks) when they name one."""
    export_info = ctx.require("export_info")
    resources = ctx.require("os_morphing_resources")
    profile = ctx.destination.os_morphing_profile(
        ctx.dest_conn, ctx.dest_env, export_info, ctx.require("instance_deployment_info"))
    disks = [appliance.GuestDisk(d["path"], d["format"], d["name"]) for d in resources["disks"]]
    request = MorphRequest(
        disks=disks, profile=profile, instance=ctx.instance,
        source_macs=[n.get("mac_address") for n in export_info["devices"]["nics"]],
        user_scripts=ctx.info.get("user_scripts") or {})
    helper = resources.get("helper")
    if helper:
        agent = helper_address(helper, ctx.dest_conn)
        ctx.event(f"starting the libguestfs appliance on {len(disks)} disk(s) on the helper "
                  f"at {agent.url}")
        morph_on_helper(agent, job_id_for(ctx.message.task_id), request, ctx.event,
                        ctx.cancelled)
        ctx.event(f"OS morphing done on the helper at {agent.url}")
        return {}
    ctx.event(f"starting the libguestfs appliance on {len(disks)} disk(s)")
    morph_in_child(request, ctx.event, ctx.cancelled)
    ctx.event("OS morphing done")
    return {}


@runs(c.TASK_TYPE_DELETE_OS_MORPHING_RESOURCES)
def delete_os_morphing_resources(ctx: TaskContext) -> JSON:
    ctx.destination.delete_os_morphing_resources(ctx.dest_conn, ctx.dest_env,
                                                 ctx.info.get("os_morphing_resources") or {})
    return {"os_morphing_resources": None}
