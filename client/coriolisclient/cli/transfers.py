"""`coriolis migration|deployment|replica ...` commands."""

from __future__ import annotations

import argparse
import functools
import os
import re
from typing import Any

from coriolisclient.cli import utils, watch
from coriolisclient.cli.base import Command, Lister, ShowOne

MIGRATION_FIELDS = (
    "id", "status", "created", "last_updated", "reservation_id", "instances", "notes",
    "origin_endpoint_id", "origin_minion_pool_id", "destination_endpoint_id",
    "destination_minion_pool_id", "instance_osmorphing_minion_pool_mappings",
    "replication_count", "shutdown_instances", "destination_environment", "source_environment",
    "network_map", "disk_storage_mappings", "storage_backend_mappings",
    "default_storage_backend", "user_scripts", "tasks", "transfer_result")
REPLICA_FIELDS = (
    "id", "created", "last_updated", "scenario_type", "reservation_id", "instances", "notes",
    "origin_endpoint_id", "origin_minion_pool_id", "destination_endpoint_id",
    "destination_minion_pool_id", "instance_osmorphing_minion_pool_mappings",
    "destination_environment", "source_environment", "network_map", "disk_storage_mappings",
    "storage_backend_mappings", "default_storage_backend", "user_scripts", "executions")
EXECUTION_FIELDS = ("id", "replica_id", "status", "created", "last_updated", "instances",
                    "tasks")
SCHEDULE_FIELDS = ("id", "replica_id", "schedule", "created", "last_updated", "enabled",
                   "expires", "shutdown_instance", "next_run")


def _storage_columns(obj: Any) -> list[Any]:
    default, backends, disks = utils.parse_storage_mappings(
        obj.to_dict().get("storage_mappings", {}))
    return [utils.format_json(obj.to_dict().get("network_map")), utils.format_mapping(disks),
            utils.format_mapping(backends), default]


def _common(obj: Any) -> list[Any]:
    d = obj.to_dict()
    return [obj.reservation_id, os.linesep.join(sorted(obj.instances)), obj.notes,
            obj.origin_endpoint_id, obj.origin_minion_pool_id, obj.destination_endpoint_id,
            obj.destination_minion_pool_id,
            utils.format_json(d.get("instance_osmorphing_minion_pool_mappings"))]


def migration_show(obj: Any, deployment: bool = False,
                   instances_data: bool = False) -> tuple[tuple[str, ...], list[Any]]:
    d = obj.to_dict()
    fields = list(MIGRATION_FIELDS)
    values = [obj.id, obj.last_execution_status, obj.created_at, obj.updated_at]
    if deployment:
        fields[4:4] = ["replica_id", "replica_scenario_type"]
        values += [obj.replica_id, obj.replica_scenario_type]
    values += _common(obj) + [
        d.get("replication_count"), d.get("shutdown_instances", False),
        utils.format_json(d.get("destination_environment")),
        utils.format_json(d.get("source_environment")), *_storage_columns(obj),
        utils.format_json(d.get("user_scripts")), utils.format_tasks(obj.tasks),
        utils.format_json(d.get("transfer_result"))]
    if instances_data:
        fields.append("instances_data")
        values.append(utils.format_json(obj.info))
    return tuple(fields), values


def replica_show(obj: Any, instances_data: bool = False) -> tuple[tuple[str, ...], list[Any]]:
    d = obj.to_dict()
    executions = os.linesep.join(f"{e['id']} {e['status']}" for e in sorted(
        obj.executions, key=lambda e: e.get("created_at") or ""))
    values = [obj.id, obj.created_at, obj.updated_at, d.get("scenario") or "replica",
              *_common(obj), utils.format_json(d.get("destination_environment")),
              utils.format_json(d.get("source_environment")), *_storage_columns(obj),
              utils.format_json(d.get("user_scripts")), executions]
    fields: tuple[str, ...] = REPLICA_FIELDS
    if instances_data:
        fields = (*fields, "instances-data")
        values.append(utils.format_json(obj.info))
    return fields, values


def execution_show(obj: Any) -> tuple[tuple[str, ...], list[Any]]:
    tasks = obj.tasks
    instances = os.linesep.join(sorted({t["instance"] for t in tasks}))
    return EXECUTION_FIELDS, [obj.id, obj.action_id, obj.status, obj.created_at,
                              obj.updated_at, instances, utils.format_tasks(tasks)]


def schedule_show(obj: Any, transfer: bool = False) -> tuple[tuple[str, ...], list[Any]]:
    """A schedule's fields; a transfer's (the newer generation) adds ``auto_deploy``."""
    values = [obj.id, obj.replica_id, utils.format_json(obj.schedule), obj.created_at,
              obj.updated_at, obj.enabled, obj.expiration_date, obj.shutdown_instance,
              obj._info.get("next_run_at")]
    if not transfer:
        return SCHEDULE_FIELDS, values
    return (*SCHEDULE_FIELDS, "auto_deploy"), [*values, obj._info.get("auto_deploy", False)]


def _id_parser(cmd: Any, prog_name: str, *names: str) -> argparse.ArgumentParser:
    """cliff's parser for ``cmd`` (its first cliff base class's) with ``names`` added."""
    cliff_base: Any = next(k for k in type(cmd).__mro__ if k.__module__.startswith("cliff."))
    parser = cliff_base.get_parser(cmd, prog_name)
    for name in names:
        parser.add_argument(name)
    return parser


def _add_transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--origin-endpoint", required=True, help="Origin endpoint id or name")
    parser.add_argument("--destination-endpoint", required=True,
                        help="Destination endpoint id or name")
    parser.add_argument("--instance", dest="instances", action="append", required=True,
                        help="An instance to transfer; may be repeated")
    parser.add_argument("--notes")
    utils.add_user_scripts(parser)
    utils.add_json_pair(parser, "destination-environment", "Destination environment")
    utils.add_json_pair(parser, "network-map", "Network map")
    utils.add_json_pair(parser, "source-environment", "Source environment")
    utils.add_storage_mappings(parser)
    utils.add_pools(parser)


def _transfer_args(cmd: Any, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "origin_endpoint_id": cmd.endpoint_id(args.origin_endpoint),
        "destination_endpoint_id": cmd.endpoint_id(args.destination_endpoint),
        # Optional (the seed README's); '{}' is a valid empty one.
        "source_environment": utils.get_json_pair(args, "source-environment"),
        "destination_environment": utils.get_json_pair(args, "destination-environment",
                                                       required=True),
        "instances": args.instances,
        "network_map": utils.get_json_pair(args, "network-map", required=True),
        "notes": args.notes, "storage_mappings": utils.get_storage_mappings(args),
        "user_scripts": utils.get_user_scripts(args),
        "origin_minion_pool_id": args.origin_minion_pool_id,
        "destination_minion_pool_id": args.destination_minion_pool_id,
        "instance_osmorphing_minion_pool_mappings": utils.get_pool_mappings(args),
    }


# --- migrations and deployments --------------------------------------------------------------
class CreateMigration(ShowOne):
    """Start a migration"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        _add_transfer_options(parser)
        parser.add_argument("--skip-os-morphing", action="store_true")
        parser.add_argument("--replication-count", type=int,
                            help="Number of disk syncs before the final one (1-10)")
        parser.add_argument("--shutdown-instances", action="store_true",
                            help="Shut the instances down before the last sync")
        watch.add_wait_options(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        migration = self.client.migrations.create(
            **_transfer_args(self, args), skip_os_morphing=args.skip_os_morphing,
            replication_count=args.replication_count,
            shutdown_instances=args.shutdown_instances)
        return migration_show(_maybe_wait(self.client.migrations, migration, args))


def _status(resource: Any) -> Any:
    return resource.last_execution_status


def _maybe_wait(manager: Any, obj: Any, args: argparse.Namespace) -> Any:
    """``obj`` (a migration or deployment just started), or with ``--wait`` its final
    state once it completed (a CLIError with the failing task's reason otherwise)."""
    if not getattr(args, "wait", False):
        return obj
    return watch.follow(functools.partial(manager.wait, obj.id), _status, args)


def _add_deploy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("replica", help="The replica's id")
    parser.add_argument("--force", action="store_true",
                        help="Deploy even without a completed execution")
    parser.add_argument("--dont-clone-disks", action="store_true",
                        help="Use the replica's disks instead of copies")
    parser.add_argument("--skip-os-morphing", action="store_true",
                        help="Do not adapt the guest OS to the destination")
    utils.add_user_scripts(parser)
    # The seed README's spellings; sent as upstream's create bodies name them.
    utils.add_pools(parser)
    watch.add_wait_options(parser)


def _deploy(manager: Any, args: argparse.Namespace, newer: bool = False) -> Any:
    """``migration deploy replica`` sends ``replica_id``; ``deployment create`` (newer)
    sends ``transfer_id``, upstream's current key."""
    create = manager.create_from_transfer if newer else manager.create_from_replica
    return create(
        args.replica, clone_disks=not args.dont_clone_disks, force=args.force,
        skip_os_morphing=args.skip_os_morphing, user_scripts=utils.get_user_scripts(args),
        instance_osmorphing_minion_pool_mappings=utils.get_pool_mappings(args),
        origin_minion_pool_id=args.origin_minion_pool_id,
        destination_minion_pool_id=args.destination_minion_pool_id)


class DeployReplica(ShowOne):
    """Deploy a replica into instances (a migration from the replica's disks)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        _add_deploy_options(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return migration_show(_maybe_wait(self.client.migrations,
                                          _deploy(self.client.migrations, args), args))


class CreateDeployment(DeployReplica):
    """Deploy a replica into instances"""

    def take_action(self, args: argparse.Namespace) -> Any:
        deployment = _deploy(self.client.deployments, args, newer=True)
        return migration_show(_maybe_wait(self.client.deployments, deployment, args),
                              deployment=True)


def _show_command(manager: str, deployment: bool, doc: str) -> type[ShowOne]:
    class Show(ShowOne):
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = _id_parser(self, prog_name, "id")
            parser.add_argument("--show-instances-data", action="store_true")
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            obj = getattr(self.client, manager).get(args.id)
            return migration_show(obj, deployment, args.show_instances_data)

    return Show


def _wait_command(manager: str, deployment: bool, doc: str) -> type[ShowOne]:
    class Wait(ShowOne):
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = _id_parser(self, prog_name, "id")
            watch.add_wait_options(parser, default=True)
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            args.wait = True
            mgr = getattr(self.client, manager)
            return migration_show(_maybe_wait(mgr, mgr.get(args.id), args), deployment)

    return Wait


def _list_command(manager: str, deployment: bool, doc: str) -> type[Lister]:
    class List(Lister):
        __doc__ = doc

        def take_action(self, args: argparse.Namespace) -> Any:
            rows = utils.by_created(getattr(self.client, manager).list())
            columns = ["ID", "Status", "Instances", "Notes", "Created"]
            if deployment:
                columns.insert(1, "Replica ID")

            def row(m: Any) -> tuple[Any, ...]:
                values = [m.id, m.last_execution_status, "\n".join(m.instances), m.notes,
                          m.created_at]
                if deployment:
                    values.insert(1, m.replica_id)
                return tuple(values)
            return (tuple(columns) if rows else ()), (row(m) for m in rows)

    return List


def _id_command(doc: str, names: tuple[str, ...], call: Any, force: bool = False,
                wait: Any = None) -> type[Command]:
    """A command on ids ``names`` running ``call(client, args)``; ``force`` adds --force,
    ``wait`` (``wait(client, args, **options)``: a manager's ``wait``) adds --wait: a cancel
    then waits for the operation to end, exit 0 once CANCELED (or COMPLETED first)."""
    class IdCommand(Command):
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = _id_parser(self, prog_name, *names)
            for name in names:
                next(a for a in parser._actions if a.dest == name).help = (
                    f"The {name}'s id" if name != "id" else "Its id")
            if force:
                parser.add_argument("--force", action="store_true",
                                    help="Stop running tasks now")
            if wait is not None:
                watch.add_wait_options(parser)
            return parser

        def take_action(self, args: argparse.Namespace) -> None:
            call(self.client, args)
            if wait is not None and args.wait:
                try:
                    watch.follow(functools.partial(wait, self.client, args),
                                 lambda r: getattr(r, "last_execution_status", None)
                                 or getattr(r, "status", None), args)
                except utils.CLIError as exc:
                    if " ended in CANCELED" not in str(exc):
                        raise

    return IdCommand


# --- replicas (and transfers, the newer generation's name for them) ---------------------------
class _Generation:
    """Which managers a replica command uses: the replicas' (older API generation) or the
    transfers' (newer); the same server rows either way."""

    app: Any
    label = "Replica"
    managers = {"transfers": "replicas", "executions": "replica_executions",
                "schedules": "replica_schedules"}

    def gen(self, kind: str) -> Any:
        return getattr(self.app.client, self.managers[kind])


TRANSFER_MANAGERS = {"transfers": "transfers", "executions": "transfer_executions",
                     "schedules": "transfer_schedules"}


class CreateReplica(_Generation, ShowOne):
    """Create a replica"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        _add_transfer_options(parser)
        parser.add_argument("--scenario", choices=("replica", "live_migration"),
                            default="replica")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return replica_show(self.gen("transfers").create(
            replica_scenario=args.scenario, **_transfer_args(self, args)))


class CreateTransfer(CreateReplica):
    """Create a transfer (scenario replica or live_migration)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        clone = parser.add_mutually_exclusive_group()
        clone.add_argument("--clone-disks", dest="clone_disks", action="store_true",
                           default=True, help="Deployments clone the disks (default)")
        clone.add_argument("--dont-clone-disks", dest="clone_disks", action="store_false")
        morph = parser.add_mutually_exclusive_group()
        morph.add_argument("--os-morphing", dest="skip_os_morphing", action="store_false",
                           default=False, help="Deployments morph the guests (default)")
        morph.add_argument("--skip-os-morphing", dest="skip_os_morphing",
                           action="store_true")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return replica_show(self.client.transfers.create(
            transfer_scenario=args.scenario, clone_disks=args.clone_disks,
            skip_os_morphing=args.skip_os_morphing, **_transfer_args(self, args)))


class UpdateReplica(_Generation, ShowOne):
    """Update a replica (runs as a replica_update execution)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "id")
        parser.add_argument("--notes")
        utils.add_user_scripts(parser)
        utils.add_json_pair(parser, "destination-environment", "Destination environment")
        utils.add_json_pair(parser, "network-map", "Network map")
        utils.add_json_pair(parser, "source-environment", "Source environment")
        utils.add_storage_mappings(parser)
        utils.add_pools(parser)
        if self.label == "Transfer":  # the defaults of its deployments
            clone = parser.add_mutually_exclusive_group()
            clone.add_argument("--clone-disks", dest="clone_disks", action="store_true",
                               default=None, help="Deployments clone the disks")
            clone.add_argument("--dont-clone-disks", dest="clone_disks",
                               action="store_false", help="Deployments take the disks")
            morph = parser.add_mutually_exclusive_group()
            morph.add_argument("--os-morphing", dest="skip_os_morphing", action="store_false",
                               default=None, help="Deployments run OS morphing")
            morph.add_argument("--skip-os-morphing", dest="skip_os_morphing",
                               action="store_true", help="Deployments skip OS morphing")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        values: dict[str, Any] = {}
        for key in ("clone_disks", "skip_os_morphing"):
            if getattr(args, key, None) is not None:
                values[key] = getattr(args, key)
        for name in ("destination-environment", "source-environment", "network-map"):
            value = utils.get_json_pair(args, name)
            if value is not None:
                values[name.replace("-", "_")] = value
        mappings = utils.get_storage_mappings(args)
        if mappings:
            values["storage_mappings"] = mappings
        if args.notes is not None:
            values["notes"] = args.notes
        for key in ("origin_minion_pool_id", "destination_minion_pool_id"):
            value = getattr(args, key)
            if value is not None:
                values[key] = value or None
        pools = utils.get_pool_mappings(args)
        if pools:
            values["instance_osmorphing_minion_pool_mappings"] = pools
        values["user_scripts"] = utils.get_user_scripts(args)
        return execution_show(self.gen("transfers").update(args.id, values))


class DeleteReplicaDisks(_Generation, ShowOne):
    """Delete a replica's destination disks"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _id_parser(self, prog_name, "id")

    def take_action(self, args: argparse.Namespace) -> Any:
        return execution_show(self.gen("transfers").delete_disks(args.id))


class DeleteReplica(_Generation, Command):
    """Delete a replica; refused while it holds destination disks unless --delete-disks"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "id")
        parser.add_argument("--delete-disks", action="store_true",
                            help="Delete its destination disks (and their manifests) first, "
                                 "waiting for that, then the replica")
        watch.add_wait_options(parser, default=True)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        transfers = self.gen("transfers")
        info = transfers.get(args.id).to_dict().get("info") or {}
        holding = sorted(i for i, data in info.items() if (data or {}).get("volumes_info"))
        if holding:
            kind = self.label.lower()
            if not args.delete_disks:
                raise utils.CLIError(
                    f"{self.label} {args.id} holds destination disks of {', '.join(holding)};"
                    f" add --delete-disks to delete them with it (or run `coriolis {kind} "
                    f"disks delete {args.id}` first)")
            execution = transfers.delete_disks(args.id)
            watch.follow(functools.partial(self.gen("executions").wait, args.id,
                                           execution.id), lambda r: r.status, args)
        transfers.delete(args.id)


class ListReplicas(_Generation, Lister):
    """List replicas"""

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = utils.by_created(self.gen("transfers").list())
        columns = ("ID", "Scenario", "Instances", "Notes", "Last Execution Status", "Created")
        return (columns if rows else ()), (
            (r.id, r.to_dict().get("scenario") or "replica", "\n".join(r.instances), r.notes,
             r.last_execution_status, r.created_at) for r in rows)


class ShowReplica(_Generation, ShowOne):
    """Show a replica"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "id")
        parser.add_argument("--show-instances-data", action="store_true")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return replica_show(self.gen("transfers").get(args.id), args.show_instances_data)


class ExecuteReplica(_Generation, ShowOne):
    """Start a replica execution"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "replica")
        parser.add_argument("--shutdown-instances", action="store_true")
        if self.label == "Transfer":
            parser.add_argument("--auto-deploy", action="store_true",
                                help="Deploy the transfer once the execution completes "
                                     "(with its clone-disks/skip-os-morphing defaults)")
        watch.add_wait_options(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        extra = {"auto_deploy": True} if getattr(args, "auto_deploy", False) else {}
        execution = self.gen("executions").create(args.replica, args.shutdown_instances,
                                                  **extra)
        if args.wait:
            execution = watch.follow(functools.partial(
                self.gen("executions").wait, args.replica, execution.id),
                lambda r: r.status, args)
        return execution_show(execution)


class WaitExecution(_Generation, ShowOne):
    """Wait for a replica execution to end, showing its progress (exit 1 unless it
    completes)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "replica", "id")
        watch.add_wait_options(parser, default=True)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return execution_show(watch.follow(functools.partial(
            self.gen("executions").wait, args.replica, args.id), lambda r: r.status, args))


class ListExecutions(_Generation, Lister):
    """List a replica's executions"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _id_parser(self, prog_name, "replica")

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = utils.by_created(self.gen("executions").list(args.replica))
        return ((f"{self.label} ID", "ID", "Status", "Created") if rows else ()), (
            (e.action_id, e.id, e.status, e.created_at) for e in rows)


class ShowExecution(_Generation, ShowOne):
    """Show a replica execution"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _id_parser(self, prog_name, "replica", "id")

    def take_action(self, args: argparse.Namespace) -> Any:
        return execution_show(self.gen("executions").get(args.replica, args.id))


# --- schedules ---------------------------------------------------------------------------------
CRON_PART = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?$")


def _add_schedule_fields(parser: argparse.ArgumentParser) -> None:
    """The seed's field flags; each an exact value or cron syntax (``*``, ``*/N``,
    ``A-B``, ``A-B/N``, comma-separated lists), checked by the server against the
    field's range; exact values are checked here too."""
    def field(low: int, high: int) -> Any:
        def parse(value: str) -> int | str:
            text = value.strip()
            if text.isdigit():
                number = int(text)
                if not low <= number <= high:
                    raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
                return number
            if not all(CRON_PART.match(p) for p in text.replace(" ", "").split(",")):
                raise argparse.ArgumentTypeError(
                    f"'{value}' is neither a number nor cron syntax (*, */N, A-B, A-B/N, "
                    "lists of those)")
            return text
        return parse

    for short, long, key, low, high, what in (
            ("-M", "--minute", "minute", 0, 59, "Minute"),
            ("-H", "--hour", "hour", 0, 23, "Hour (UTC)"),
            ("-d", "--day-of-month", "dom", 1, 31, "Day of the month"),
            ("-m", "--month", "month", 1, 12, "Month"),
            ("-w", "--day-of-week", "dow", 0, 6, "Day of the week, 0 = Monday")):
        parser.add_argument(short, long, dest=key, type=field(low, high),
                            metavar=f"[{low}-{high}|CRON]",
                            help=f"{what}: a value, or cron syntax such as '*/5', '1-5', "
                                 "'0,30'; not given: any")


def _schedule(args: argparse.Namespace) -> dict[str, int | str]:
    return {k: getattr(args, k) for k in ("minute", "hour", "dom", "month", "dow")
            if getattr(args, k) is not None}


class CreateSchedule(_Generation, ShowOne):
    """Create a replica execution schedule (UTC)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "replica")
        _add_schedule_fields(parser)
        parser.add_argument("--expires-at", help="ISO 8601 date after which it never runs")
        parser.add_argument("--disabled", action="store_true")
        parser.add_argument("--shutdown-instance", action="store_true")
        if self.label == "Transfer":
            parser.add_argument("--auto-deploy", action="store_true",
                                help="Each execution deploys the transfer once completed")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        schedule = _schedule(args)
        if not schedule:
            raise utils.CLIError("give at least one of -M, -H, -d, -m, -w")
        expires = utils.parse_utc(args.expires_at) if args.expires_at else None
        extra = {"auto_deploy": True} if getattr(args, "auto_deploy", False) else {}
        return schedule_show(self.gen("schedules").create(
            args.replica, schedule, not args.disabled, expires, args.shutdown_instance,
            **extra), self.label == "Transfer")


class UpdateSchedule(_Generation, ShowOne):
    """Update a replica execution schedule"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "replica", "id")
        _add_schedule_fields(parser)
        expiry = parser.add_mutually_exclusive_group()
        expiry.add_argument("--expires-at")
        expiry.add_argument("--no-expiration-date", action="store_true")
        enabled = parser.add_mutually_exclusive_group()
        enabled.add_argument("--enabled", dest="enabled", action="store_true", default=None)
        enabled.add_argument("--disabled", dest="enabled", action="store_false")
        shutdown = parser.add_mutually_exclusive_group()
        shutdown.add_argument("--shutdown-instance", dest="shutdown", action="store_true",
                              default=False)
        shutdown.add_argument("--dont-shutdown-instance", dest="shutdown",
                              action="store_false")
        if self.label == "Transfer":
            deploy = parser.add_mutually_exclusive_group()
            deploy.add_argument("--auto-deploy", dest="auto_deploy", action="store_true",
                                default=None)
            deploy.add_argument("--dont-auto-deploy", dest="auto_deploy",
                                action="store_false")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        values: dict[str, Any] = {"shutdown_instance": args.shutdown}
        if _schedule(args):
            values["schedule"] = _schedule(args)
        if args.expires_at:
            values["expiration_date"] = utils.parse_utc(args.expires_at)
        elif args.no_expiration_date:
            values["expiration_date"] = None
        if args.enabled is not None:
            values["enabled"] = args.enabled
        if getattr(args, "auto_deploy", None) is not None:
            values["auto_deploy"] = args.auto_deploy
        return schedule_show(self.gen("schedules").update(args.replica, args.id, values),
                             self.label == "Transfer")


class ListSchedules(_Generation, Lister):
    """List a replica's schedules"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _id_parser(self, prog_name, "replica")
        parser.add_argument("--hide-expired", action="store_true")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = utils.by_created(self.gen("schedules").list(args.replica,
                                                                   args.hide_expired))
        return ((f"{self.label} ID", "ID", "Schedule", "Created", "Expires", "Next Run")
                if rows else ()), (
            (s.replica_id, s.id, utils.format_json(s.schedule, indent=None), s.created_at,
             s.expiration_date, s._info.get("next_run_at")) for s in rows)


class ShowSchedule(_Generation, ShowOne):
    """Show a replica schedule"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _id_parser(self, prog_name, "replica", "id")

    def take_action(self, args: argparse.Namespace) -> Any:
        return schedule_show(self.gen("schedules").get(args.replica, args.id),
                             self.label == "Transfer")


def _wait_on(manager: str, *names: str) -> Any:
    """``wait(client, args, **options)``: ``manager.wait`` on the ids in ``args.<names>``."""
    def wait(client: Any, args: argparse.Namespace, **options: Any) -> Any:
        return getattr(client, manager).wait(*(getattr(args, n) for n in names), **options)
    return wait


COMMANDS = {
    "migration create": CreateMigration,
    "migration deploy replica": DeployReplica,
    "migration show": _show_command("migrations", False, "Show a migration"),
    "migration list": _list_command("migrations", False, "List migrations"),
    "migration wait": _wait_command(
        "migrations", False, "Wait for a migration to end, showing its progress (exit 1 "
        "unless it completes)"),
    "migration cancel": _id_command("Cancel a migration", ("id",),
                                    lambda c, a: c.migrations.cancel(a.id, a.force), True,
                                    _wait_on("migrations", "id")),
    "migration delete": _id_command("Delete a migration", ("id",),
                                    lambda c, a: c.migrations.delete(a.id)),
    "deployment create": CreateDeployment,
    "deployment show": _show_command("deployments", True, "Show a deployment"),
    "deployment list": _list_command("deployments", True, "List deployments"),
    "deployment wait": _wait_command(
        "deployments", True, "Wait for a deployment to end, showing its progress (exit 1 "
        "unless it completes)"),
    "deployment cancel": _id_command("Cancel a deployment", ("id",),
                                     lambda c, a: c.deployments.cancel(a.id, a.force), True,
                                     _wait_on("deployments", "id")),
    "deployment delete": _id_command("Delete a deployment", ("id",),
                                     lambda c, a: c.deployments.delete(a.id)),
    "replica create": CreateReplica,
    "replica update": UpdateReplica,
    "replica delete": DeleteReplica,
    "replica disks delete": DeleteReplicaDisks,
    "replica list": ListReplicas,
    "replica show": ShowReplica,
    "replica execute": ExecuteReplica,
    "replica execution list": ListExecutions,
    "replica execution show": ShowExecution,
    "replica execution cancel": _id_command(
        "Cancel a replica execution", ("replica", "id"),
        lambda c, a: c.replica_executions.cancel(a.replica, a.id, a.force), True,
        _wait_on("replica_executions", "replica", "id")),
    "replica execution wait": WaitExecution,
    "replica execution delete": _id_command(
        "Delete a replica execution", ("replica", "id"),
        lambda c, a: c.replica_executions.delete(a.replica, a.id)),
    "replica schedule create": CreateSchedule,
    "replica schedule update": UpdateSchedule,
    "replica schedule list": ListSchedules,
    "replica schedule show": ShowSchedule,
    "replica schedule delete": _id_command(
        "Delete a replica schedule", ("replica", "id"),
        lambda c, a: c.replica_schedules.delete(a.replica, a.id)),
}


def _transfer_command(command: type, doc: str) -> type:
    """``command`` on /transfers (its ``replica`` positional named ``transfer`` in help)."""
    return type(f"{command.__name__}Transfer", (command,), {
        "__doc__": doc, "label": "Transfer", "managers": TRANSFER_MANAGERS})


COMMANDS.update({
    "transfer create": _transfer_command(CreateTransfer, "Create a transfer"),
    "transfer update": _transfer_command(UpdateReplica,
                                         "Update a transfer (runs as an execution)"),
    "transfer delete": _transfer_command(
        DeleteReplica, "Delete a transfer; refused while it holds destination disks unless "
        "--delete-disks"),
    "transfer disks delete": _transfer_command(DeleteReplicaDisks,
                                               "Delete a transfer's destination disks"),
    "transfer list": _transfer_command(ListReplicas, "List transfers"),
    "transfer show": _transfer_command(ShowReplica, "Show a transfer"),
    "transfer execute": _transfer_command(ExecuteReplica, "Start a transfer execution"),
    "transfer execution list": _transfer_command(ListExecutions,
                                                 "List a transfer's executions"),
    "transfer execution show": _transfer_command(ShowExecution, "Show a transfer execution"),
    "transfer execution cancel": _id_command(
        "Cancel a transfer execution", ("transfer", "id"),
        lambda c, a: c.transfer_executions.cancel(a.transfer, a.id, a.force), True,
        _wait_on("transfer_executions", "transfer", "id")),
    "transfer execution wait": _transfer_command(
        WaitExecution, "Wait for a transfer execution to end, showing its progress (exit 1 "
        "unless it completes)"),
    "transfer execution delete": _id_command(
        "Delete a transfer execution", ("transfer", "id"),
        lambda c, a: c.transfer_executions.delete(a.transfer, a.id)),
    "transfer schedule create": _transfer_command(CreateSchedule,
                                                  "Create a transfer execution schedule (UTC)"),
    "transfer schedule update": _transfer_command(UpdateSchedule,
                                                  "Update a transfer execution schedule"),
    "transfer schedule list": _transfer_command(ListSchedules, "List a transfer's schedules"),
    "transfer schedule show": _transfer_command(ShowSchedule, "Show a transfer schedule"),
    "transfer schedule delete": _id_command(
        "Delete a transfer schedule", ("transfer", "id"),
        lambda c, a: c.transfer_schedules.delete(a.transfer, a.id)),
})
