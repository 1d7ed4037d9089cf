"""`coriolis provider|region|service|minion pool ...` commands."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from coriolisclient.cli import utils, watch
from coriolisclient.cli.base import Command, Lister, ShowOne
from coriolisclient.v1.admin import SCHEMA_TYPES

PROVIDER_TYPE_LABELS = {
    1: "Migration Destination", 2: "Migration Source", 4: "Replica Destination",
    8: "Replica Source", 16: "Endpoints", 32: "Listing Instances", 64: "OSMorphing",
    128: "Listing Networks", 256: "Listing VM Flavors", 512: "Listing Available Options",
    524288: "Source Minion Pool Operations", 1048576: "Destination Minion Pool Operations"}


class ListProviders(Lister):
    """List providers and what each supports"""

    def take_action(self, args: argparse.Namespace) -> Any:
        providers = sorted(self.client.providers.list().providers_list, key=lambda p: p["name"])
        return (("Platform", "Supported Actions") if providers else ()), (
            (p["name"], ", ".join(PROVIDER_TYPE_LABELS[t] for t in sorted(p["types"])
                                  if t in PROVIDER_TYPE_LABELS)) for p in providers)


class ListProviderSchemas(Lister):
    """List a provider's schemas"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("platform")
        parser.add_argument("type", choices=sorted(SCHEMA_TYPES))
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        schemas = self.client.providers.schemas_list(
            args.platform, SCHEMA_TYPES[args.type]).provider_schemas
        return (("Schema Type", "Schema") if schemas else ()), (
            (s["type"], utils.format_json(s["schema"], indent=4)) for s in schemas)


# --- regions -----------------------------------------------------------------------------------
REGION_COLUMNS = ("ID", "Name", "Enabled", "Description", "Mapped Endpoint IDs",
                  "Mapped Service IDs", "Created At", "Last Updated At")


def _region_row(r: Any) -> tuple[Any, ...]:
    return (r.id, r.name, r.enabled, r.description, r.mapped_endpoints, r.mapped_services,
            r.created_at, r.updated_at)


def _enabled_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--enabled", dest="enabled", action="store_true", default=None)
    group.add_argument("--disabled", dest="enabled", action="store_false")


class CreateRegion(ShowOne):
    """Create a Coriolis region"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name")
        parser.add_argument("--description", default="")
        _enabled_flags(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return REGION_COLUMNS, _region_row(self.client.regions.create(
            args.name, args.description, args.enabled))


class UpdateRegion(ShowOne):
    """Update a Coriolis region"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id")
        parser.add_argument("--name")
        parser.add_argument("--description")
        _enabled_flags(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        values: dict[str, Any] = {}
        if args.enabled is not None:
            values["enabled"] = args.enabled
        if args.name:
            values["name"] = args.name
        if args.description:
            values["description"] = args.description
        return REGION_COLUMNS, _region_row(self.client.regions.update(args.id, values))


# --- services ----------------------------------------------------------------------------------
SERVICE_COLUMNS = ("ID", "Host", "Binary", "Topic", "Enabled", "Status", "Mapped Region IDs",
                   "Created At", "Last Updated At")


def _service_row(s: Any) -> tuple[Any, ...]:
    return (s.id, s.host, s.binary, s.topic, s.enabled, s.status, s.mapped_regions,
            s.created_at, s.updated_at)


class CreateService(ShowOne):
    """Register a worker service"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--host", required=True)
        parser.add_argument("--binary", required=True)
        parser.add_argument("--topic", required=True)
        parser.add_argument("--coriolis-region", dest="regions", action="append", default=[])
        _enabled_flags(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        enabled = True if args.enabled is None else args.enabled
        return SERVICE_COLUMNS, _service_row(self.client.services.create(
            args.host, args.binary, args.topic, args.regions, enabled))


class UpdateService(ShowOne):
    """Enable/disable a worker service or change its regions"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id")
        parser.add_argument("--coriolis-region", dest="regions", action="append", default=[],
                            help="Region of the service; replaces all; may be repeated")
        _enabled_flags(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        # Regions are replaced only when some are given (upstream's client always sent
        # [] and so cleared them on a plain --enabled/--disabled).
        values: dict[str, Any] = {"mapped_regions": args.regions} if args.regions else {}
        if args.enabled is not None:
            values["enabled"] = args.enabled
        return SERVICE_COLUMNS, _service_row(self.client.services.update(args.id, values))


# --- minion pools ------------------------------------------------------------------------------
POOL_FIELDS = ("ID", "Pool Name", "Endpoint", "Pool Platform", "OS Type", "Pool Status", "Notes",
               "Created At", "Updated At", "Maintenance Trust ID", "Minimum Minions",
               "Maximum Minions", "Minion Max Idle Time", "Minion Retention Strategy",
               "Environment Options", "Shared Resources", "Events", "Progress Updates",
               "Minion Machines")


def _events(items: list[dict[str, Any]]) -> str:
    return "\n".join(f"{e.get('level')} {e.get('created_at')} {e.get('message')}"
                     for e in sorted(items or [], key=lambda e: e.get("index", 0)))


def pool_show(p: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    d = p.to_dict()
    return POOL_FIELDS, (
        p.id, p.name, p.endpoint_id, p.platform, p.os_type, p.status, p.notes, p.created_at,
        p.updated_at, p.maintenance_trust_id, p.minimum_minions, p.maximum_minions,
        p.minion_max_idle_time, p.minion_retention_strategy,
        utils.format_json(d.get("environment_options")),
        utils.format_json(d.get("shared_resources")), _events(p.events),
        "\n".join(utils.format_progress_update(u) for u in p.progress_updates or []),
        utils.format_json(d.get("minion_machines")))


def _pool_options(parser: argparse.ArgumentParser, creating: bool) -> None:
    # The seed README's spellings (--pool-*) beside the upstream client's.
    parser.add_argument("--os-type", "--pool-os-type", dest="os_type", required=creating)
    parser.add_argument("--notes")
    parser.add_argument("--minimum-minions", type=int)
    parser.add_argument("--maximum-minions", type=int)
    parser.add_argument("--minion-max-idle-time", type=int, help="seconds")
    parser.add_argument("--minion-retention-strategy", default="delete" if creating else None,
                        choices=("delete", "poweroff"))
    utils.add_json_pair(parser, "environment-options", "Environment options")


class CreatePool(ShowOne):
    """Create a minion pool"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name")
        parser.add_argument("--platform", "--pool-platform", dest="platform", required=True,
                            help="source or destination")
        parser.add_argument("--endpoint-id", "--pool-endpoint", dest="endpoint_id",
                            required=True, help="Endpoint id or name")
        parser.add_argument("--skip-allocation", action="store_true")
        _pool_options(parser, creating=True)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return pool_show(self.client.minion_pools.create(
            args.name, self.endpoint_id(args.endpoint_id), args.platform, args.os_type,
            utils.get_json_pair(args, "environment-options", required=True),
            args.minimum_minions, args.maximum_minions, args.minion_max_idle_time,
            args.minion_retention_strategy, args.notes, args.skip_allocation))


class UpdatePool(ShowOne):
    """Update a minion pool"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id")
        parser.add_argument("--name")
        _pool_options(parser, creating=False)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        values = {k: getattr(args, k) for k in (
            "name", "os_type", "notes", "minimum_minions", "maximum_minions",
            "minion_max_idle_time", "minion_retention_strategy") if getattr(args, k) is not None}
        env = utils.get_json_pair(args, "environment-options")
        if env is not None:
            values["environment_options"] = env
        return pool_show(self.client.minion_pools.update(args.id, values))


class ListPools(Lister):
    """List minion pools"""

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = utils.by_created(self.client.minion_pools.list())
        columns = ("ID", "Pool Name", "Endpoint", "Pool Platform", "OS Type", "Notes",
                   "Pool Status", "Minions (Min - Max)")
        return (columns if rows else ()), (
            (p.id, p.name, p.endpoint_id, p.platform, p.os_type, p.notes, p.status,
             f"{p.minimum_minions} - {p.maximum_minions}") for p in rows)


def _pool_action(doc: str, call: Any, force: bool = False) -> type[ShowOne]:
    class PoolAction(ShowOne):
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = super().get_parser(prog_name)
            parser.add_argument("id", help="The minion pool's id")
            if force:
                parser.add_argument("--force", action="store_true",
                                    help="Deallocate even if machines are in use or the "
                                         "pool is in an error state")
            watch.add_wait_options(parser)
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            pool = call(self.client.minion_pools, args)
            if args.wait:
                pool = watch.follow(functools.partial(self.client.minion_pools.wait, pool.id),
                                    lambda p: p.status, args)
            return pool_show(pool)

    return PoolAction


def _simple(doc: str, call: Any, show: Any = None) -> type[Command]:
    base: type = ShowOne if show else Command

    class Simple(base):  # type: ignore[valid-type,misc]
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = super().get_parser(prog_name)
            parser.add_argument("id")
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            result = call(self.client, args.id)
            return show(result) if show else None

    return Simple


def _lister(doc: str, call: Any, columns: tuple[str, ...], row: Any) -> type[Lister]:
    class SimpleList(Lister):
        __doc__ = doc

        def take_action(self, args: argparse.Namespace) -> Any:
            rows = utils.by_created(call(self.client))
            return (columns if rows else ()), (row(r) for r in rows)

    return SimpleList


COMMANDS = {
    "provider list": ListProviders,
    "provider schema list": ListProviderSchemas,
    "region create": CreateRegion,
    "region update": UpdateRegion,
    "region list": _lister("List regions", lambda c: c.regions.list(), REGION_COLUMNS,
                           _region_row),
    "region show": _simple("Show a region", lambda c, i: c.regions.get(i),
                           lambda r: (REGION_COLUMNS, _region_row(r))),
    "region delete": _simple("Delete a region", lambda c, i: c.regions.delete(i)),
    "service create": CreateService,
    "service update": UpdateService,
    "service list": _lister("List worker services", lambda c: c.services.list(),
                            SERVICE_COLUMNS, _service_row),
    "service show": _simple("Show a worker service", lambda c, i: c.services.get(i),
                            lambda s: (SERVICE_COLUMNS, _service_row(s))),
    "service delete": _simple("Delete a worker service", lambda c, i: c.services.delete(i)),
    "minion pool create": CreatePool,
    "minion pool update": UpdatePool,
    "minion pool list": ListPools,
    "minion pool show": _simple("Show a minion pool", lambda c, i: c.minion_pools.get(i),
                                pool_show),
    "minion pool delete": _simple("Delete a minion pool",
                                  lambda c, i: c.minion_pools.delete(i)),
    "minion pool allocate": _pool_action(
        "Allocate a minion pool", lambda m, a: m.allocate_minion_pool(a.id)),
    "minion pool refresh": _pool_action(
        "Refresh a minion pool", lambda m, a: m.refresh_minion_pool(a.id)),
    "minion pool deallocate": _pool_action(
        "Deallocate a minion pool", lambda m, a: m.deallocate_minion_pool(a.id, a.force),
        force=True),
    # The seed README's name: machines and shared resources both go (a deallocation).
    "minion pool tear down shared resources": _pool_action(
        "Deallocate a minion pool: its machines, then its shared resources",
        lambda m, a: m.deallocate_minion_pool(a.id, a.force), force=True),
}
