"""Command base classes: the API client and endpoint name resolution at hand."""

from __future__ import annotations

from typing import Any

from cliff import command, lister, show


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
    pass


class ShowOne(_ClientMixin, show.ShowOne):
    pass
