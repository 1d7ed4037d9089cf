"""Command base classes: the API client and endpoint name resolution at hand."""

from __future__ import annotations

from typing import Any

from cliff import command, lister, show

from coriolisclient.cli.utils import Structured

STRUCTURED_FORMATS = ("json", "yaml")


def structured(parsed_args: Any, values: Any) -> Any:
    """``values`` with each ``Structured`` field replaced by its data when the output
    format is JSON or YAML (nested fields as real structures there)."""
    if getattr(parsed_args, "formatter", None) not in STRUCTURED_FORMATS:
        return values
    return [v.data if isinstance(v, Structured) else v for v in values]


# Help for the options and arguments that commands share, by option string or dest; a
# command's own help text wins (``fill_help``).
DEFAULT_HELP = {
    "id": "Its id", "replica": "The replica's (transfer's) id", "name": "Its name",
    "appliance_id": "The licensing appliance's id", "reservation_id": "The reservation's id",
    "licence_id": "The licence's id", "log_name": "The log's name (see `coriolis log list`)",
    "type": "The schema type: connection, destination, source, source_minion_pool or "
            "destination_minion_pool",
    "platform": "The provider (platform) name, e.g. local, libvirt, openstack",
    "--name": "The new name", "--description": "A free-text description",
    "--notes": "Free-text notes", "--enabled": "Enable it", "--disabled": "Disable it",
    "--shutdown-instance": "Shut the instances down before the last sync",
    "--dont-shutdown-instance": "Do not shut the instances down",
    "--shutdown-instances": "Shut the instances down before the last sync",
    "--show-instances-data": "Also show what the tasks recorded per instance (disks, "
                             "resources)",
    "--skip-os-morphing": "Do not adapt the guest OS to the destination",
    "--scenario": "replica (repeated syncs, then a deployment) or live_migration",
    "--os-type": "The minions' OS type (linux or windows)",
    "--no-expiration-date": "Remove the expiration date",
    "--expires-at": "ISO 8601 date (UTC unless it says otherwise) after which it never runs",
    "--minion-retention-strategy": "What happens to idle minions beyond the minimum: "
                                   "delete or poweroff",
    "--minimum-minions": "Minions kept allocated", "--maximum-minions": "Most minions at once",
    "--hide-expired": "Leave out expired schedules", "--topic": "The service's message topic",
    "--skip-allocation": "Create the pool without allocating it",
    "--out-file": "Where to write it (default: standard output)",
    "--licence-pem-file": "Path of the licence (PEM)", "--licence-pem": "The licence (PEM text)",
    "--host": "The service's host name", "--binary": "The service's binary name",
    "--dont-clone-disks": "Deployments take the disks instead of copies",
    "--auto-deploy": "Deploy the transfer once each execution completes",
    "--dont-auto-deploy": "Do not deploy after executions",
    "--coriolis-region": "A region to map it to; may be repeated",
}


def fill_help(parser: Any) -> Any:
    """Give every option without help text the shared one for its name (or its dest)."""
    for action in parser._actions:
        if action.help is None:
            keys = [*action.option_strings, action.dest]
            action.help = next((DEFAULT_HELP[k] for k in keys if k in DEFAULT_HELP), None)
    return parser


class _ClientMixin:
    app: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Each command's ``get_parser`` ends with ``fill_help`` (help on every option)."""
        super().__init_subclass__(**kwargs)
        own = cls.__dict__.get("get_parser")
        if own is not None and not getattr(own, "_fills_help", False):
            def get_parser(self: Any, prog_name: str, _own: Any = own) -> Any:
                return fill_help(_own(self, prog_name))
            get_parser._fills_help = True  # type: ignore[attr-defined]
            setattr(cls, "get_parser", get_parser)  # noqa: B010

    def get_epilog(self) -> str:
        """The command's epilog without cliff's "provided by the X plugin" note: every
        command is this distribution's, and finding a command's distribution reads the
        metadata of every installed package (0.2 to 0.4 s a command)."""
        return self._epilog or ""  # type: ignore[attr-defined]

    @property
    def client(self) -> Any:
        return self.app.client

    def endpoint_id(self, name_or_id: str) -> str:
        return self.client.endpoints.get_endpoint_id_for_name(name_or_id)


class Command(_ClientMixin, command.Command):
    pass


class Lister(_ClientMixin, lister.Lister):
    def produce_output(self, parsed_args: Any, column_names: Any, data: Any) -> int:
        """An empty list defines no columns (as upstream's); with ``-c`` that would be
        cliff's "No recognized column names" error: take the asked columns instead, so
        the empty list prints nothing (``[]`` in JSON) and exits 0."""
        if not column_names and getattr(parsed_args, "columns", None):
            column_names = tuple(parsed_args.columns)
        rows = (structured(parsed_args, row) for row in data)
        return int(super().produce_output(parsed_args, column_names, rows))


class ShowOne(_ClientMixin, show.ShowOne):
    def produce_output(self, parsed_args: Any, column_names: Any, data: Any) -> int:
        return int(super().produce_output(parsed_args, column_names,
                                          structured(parsed_args, data)))
