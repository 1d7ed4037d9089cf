"""Provider lookup by platform name, from the ``coriolis.providers`` entry-point group."""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from coriolis import exceptions
from coriolis.providers.base import BaseProvider, provider_types

ENTRY_POINT_GROUP = "coriolis.providers"


@functools.cache
def _providers() -> dict[str, type[BaseProvider]]:
    found: dict[str, type[BaseProvider]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.load()
    return found


def platforms() -> dict[str, int]:
    """Platform name → provider type bitmask."""
    return {name: provider_types(cls) for name, cls in sorted(_providers().items())}


def get_provider(platform: str) -> BaseProvider:
    """An instance of the provider for ``platform``; ``NotFound`` naming it if unknown."""
    try:
        cls = _providers()[platform]
    except KeyError:
        known = ", ".join(sorted(_providers())) or "none"
        raise exceptions.NotFound(
            f"Provider '{platform}' not found (available providers: {known})"
        ) from None
    return cls()

