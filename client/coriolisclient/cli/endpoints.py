"""`coriolis endpoint ...` commands."""

from __future__ import annotations

import argparse
from typing import Any

from coriolisclient import exceptions
from coriolisclient.cli import utils
from coriolisclient.cli.base import Command, Lister, ShowOne

SHOW_FIELDS = ("id", "name", "type", "description", "connection_info", "mapped_regions",
               "created_at", "last_updated")
LIST_COLUMNS = ("ID", "Name", "Type", "Description", "Mapped Region IDs")


def endpoint_show(obj: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The endpoint's fields; secrets in ``connection_info`` (passwords, tokens, keys)
    are shown as ``***``."""
    return SHOW_FIELDS, (obj.id, obj.name, obj.type, obj.description or "",
                         utils.mask_secrets(obj.connection_info), obj.mapped_regions,
                         obj.created_at, obj.updated_at)


def add_connection(parser: argparse.ArgumentParser, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--connection", help="JSON connection info")
    group.add_argument("--connection-file", type=argparse.FileType("r"),
                       help="Path of a JSON connection info file")
    group.add_argument("--connection-secret", help="Reference of a secret holding it")


def get_connection(args: argparse.Namespace) -> dict[str, Any] | None:
    if args.connection_secret:
        return {"secret_ref": args.connection_secret}
    return utils.get_json_pair(args, "connection")


class CreateEndpoint(ShowOne):
    """Create an endpoint"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--name", required=True)
        parser.add_argument("--provider", required=True, help="Provider (platform) name")
        parser.add_argument("--description")
        parser.add_argument("--skip-validation", action="store_true",
                            help="Do not validate the connection after creating the endpoint")
        parser.add_argument("--coriolis-region", dest="regions", action="append", default=[],
                            help="Region to map the endpoint to; may be repeated")
        add_connection(parser, required=True)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        endpoint = self.client.endpoints.create(args.name, args.provider, get_connection(args),
                                                args.description, args.regions)
        if not args.skip_validation:
            # A failed validation leaves nothing behind: the endpoint just made is deleted.
            try:
                valid, message = self.client.endpoints.validate_connection(endpoint.id)
            except Exception:
                self.client.endpoints.delete(endpoint.id)
                raise
            if not valid:
                self.client.endpoints.delete(endpoint.id)
                raise exceptions.EndpointConnectionValidationFailed(message)
        return endpoint_show(endpoint)


class UpdateEndpoint(ShowOne):
    """Update an endpoint"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The endpoint's id")
        parser.add_argument("--name")
        parser.add_argument("--description")
        parser.add_argument("--coriolis-region", dest="regions", action="append",
                            help="Region to map the endpoint to; replaces all; may be repeated")
        add_connection(parser, required=False)
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        values: dict[str, Any] = {}
        if args.name is not None:
            values["name"] = args.name
        if args.description is not None:
            values["description"] = args.description
        connection = get_connection(args)
        if connection is not None:
            values["connection_info"] = connection
        if args.regions is not None:
            values["mapped_regions"] = args.regions
        return endpoint_show(self.client.endpoints.update(args.id, values))


class DeleteEndpoint(Command):
    """Delete an endpoint"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The endpoint's id or name")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        self.client.endpoints.delete(self.endpoint_id(args.id))


class ListEndpoint(Lister):
    """List endpoints"""

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = utils.by_created(self.client.endpoints.list())
        return (LIST_COLUMNS if rows else ()), (
            (e.id, e.name, e.type, e.description or "", e.mapped_regions) for e in rows)


class ShowEndpoint(ShowOne):
    """Show an endpoint"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The endpoint's id or name")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        return endpoint_show(self.client.endpoints.get(self.endpoint_id(args.id)))


class ValidateConnection(Command):
    """Validate an endpoint's connection"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The endpoint's id or name")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        valid, message = self.client.endpoints.validate_connection(self.endpoint_id(args.id))
        if not valid:
            raise exceptions.EndpointConnectionValidationFailed(message)
        if message:  # what the provider reached (libvirt: hypervisor and version)
            self.app.stdout.write(f"{message}\n")


def _endpoint_env_parser(cmd: Any, prog_name: str) -> argparse.ArgumentParser:
    parser = super(type(cmd), cmd).get_parser(prog_name)
    parser.add_argument("endpoint", help="The endpoint's id or name")
    utils.add_json_pair(parser, "environment", "Environment for the listing")
    return parser


class ListInstances(Lister):
    """List an endpoint's instances"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _endpoint_env_parser(self, prog_name)
        parser.add_argument("--marker", help="The id of the last instance of the previous page")
        parser.add_argument("--limit", type=int, help="Maximum number of instances")
        parser.add_argument("--name", help="Filter by name (regular expression)")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        env = utils.get_json_pair(args, "environment") or {}
        rows = self.client.endpoint_instances.list(self.endpoint_id(args.endpoint), env=env,
                                                   marker=args.marker, limit=args.limit,
                                                   name=args.name)
        columns = ("ID", "Name", "Flavor", "Memory MB", "Cores", "OS Type")
        return (columns if rows else ()), (
            (i.id, i.to_dict().get("instance_name") or i.name,
             i.to_dict().get("flavor_name") or "", i.memory_mb, i.num_cpu, i.os_type)
            for i in rows)


class ShowInstance(ShowOne):
    """Show an endpoint's instance"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = _endpoint_env_parser(self, prog_name)
        parser.add_argument("instance", help="The instance's id or name")
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        env = utils.get_json_pair(args, "environment")
        i = self.client.endpoint_instances.get(self.endpoint_id(args.endpoint), args.instance,
                                               env=env)
        info = i.to_dict()
        devices = i.devices or {}
        fields = ("ID", "Name", "Instance name", "Flavor", "Memory MB", "Cores", "OS Type",
                  "Firmware Type", "Controllers", "Disks", "Network Interfaces", "CDRoms",
                  "Floppies", "Serial Ports")
        return fields, (
            i.id, i.name, info.get("instance_name"), info.get("flavor_name"), i.memory_mb,
            i.num_cpu, i.os_type, info.get("firmware_type") or "UNKNOWN",
            *(utils.format_json(devices.get(k, [])) for k in
              ("controllers", "disks", "nics", "cdroms", "floppies", "serial_ports")))


class ListNetworks(Lister):
    """List an endpoint's networks"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _endpoint_env_parser(self, prog_name)

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = sorted(self.client.endpoint_networks.list(
            self.endpoint_id(args.endpoint), utils.get_json_pair(args, "environment")),
            key=lambda n: n.name)
        return (("ID", "Name") if rows else ()), ((n.id, n.name) for n in rows)


class ListStorage(Lister):
    """List an endpoint's storage backends"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        return _endpoint_env_parser(self, prog_name)

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = sorted(self.client.endpoint_storage.list(
            self.endpoint_id(args.endpoint), utils.get_json_pair(args, "environment")),
            key=lambda s: s.name)
        return (("ID", "Name", "Additional Properties") if rows else ()), (
            (s.id, s.name, s.to_dict().get("additional_provider_properties")) for s in rows)


def options_command(manager: str, doc: str) -> type[Lister]:
    class ListOptions(Lister):
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = _endpoint_env_parser(self, prog_name)
            parser.add_argument("--options", nargs="+", help="Names of the options to list")
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            rows = sorted(getattr(self.client, manager).list(
                self.endpoint_id(args.endpoint), utils.get_json_pair(args, "environment"),
                args.options), key=lambda o: o.name)
            return (("Option Name", "Possible Values", "Configuration Default") if rows
                    else ()), ((o.name, utils.format_json(o.to_dict().get("values")),
                                o.to_dict().get("config_default")) for o in rows)

    return ListOptions


COMMANDS = {
    "endpoint create": CreateEndpoint,
    "endpoint update": UpdateEndpoint,
    "endpoint delete": DeleteEndpoint,
    "endpoint list": ListEndpoint,
    "endpoint show": ShowEndpoint,
    "endpoint validate connection": ValidateConnection,
    "endpoint instance list": ListInstances,
    "endpoint instance show": ShowInstance,
    "endpoint network list": ListNetworks,
    "endpoint storage list": ListStorage,
    "endpoint destination options list": options_command(
        "endpoint_destination_options", "List an endpoint's destination options"),
    "endpoint source options list": options_command(
        "endpoint_source_options", "List an endpoint's source options"),
    "endpoint destination minion pool options list": options_command(
        "endpoint_destination_minion_pool_options",
        "List an endpoint's destination minion pool options"),
    "endpoint source minion pool options list": options_command(
        "endpoint_source_minion_pool_options", "List an endpoint's source minion pool options"),
    # The seed README's spellings.
    "endpoint minion pool destination options list": options_command(
        "endpoint_destination_minion_pool_options",
        "List an endpoint's destination minion pool options"),
    "endpoint minion pool source options list": options_command(
        "endpoint_source_minion_pool_options", "List an endpoint's source minion pool options"),
}
