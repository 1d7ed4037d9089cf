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


class _ClientMixin:
    app: Any

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
