"""Export: every byte read through the source locations equals the source, and the extents
cover all its data."""

from __future__ import annotations

import pytest

from coriolis.providers.base import BaseProvider, Capability
from coriolis.transfer import locations
from tests.providers.backends import Backend, Instance
from tests.providers.conftest import need
from tests.providers.kit import assert_no_secret, check_extents, open_reader, read_all


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_reader_returns_the_source(provider: BaseProvider, backend: Backend, fmt: str,
                                   transfer_id: str) -> None:
    need(provider, Capability.EXPORT)
    if fmt not in backend.formats:
        pytest.skip(f"the {provider.platform} backend fixture makes no {fmt} disks")
    disks = (backend.source_disk(fmt, 10),
             backend.source_disk(fmt, 11, size=3 * 1024 * 1024))
    info = backend.connection_info()
    env = backend.source_env()
    before = backend.inventory()
    instance = backend.create_instance(Instance("kit-read", disks))
    with_instance = backend.inventory()
    export_info = provider.get_instance(info, env, instance)  # type: ignore[attr-defined]
    resources = provider.deploy_source_resources(  # type: ignore[attr-defined]
        info, env, export_info, transfer_id=transfer_id)
    try:
        assert_no_secret(resources, backend.secrets(), "source_resources")
        for disk, described in zip(disks, export_info["devices"]["disks"], strict=True):
            location = resources["disks"][described["id"]]
            locations.from_json(location)  # a valid location
            reader = open_reader(provider, info, env, location)
            try:
                assert reader.size == disk.size
                image = disk.image()
                extents = check_extents(reader.extents(), disk, image)
                for ext in extents:
                    if not ext.zero:
                        assert reader.read(ext.offset, ext.length) == \
                            image[ext.offset:ext.end], f"data extent {ext} differs"
                assert read_all(reader, disk.size) == image, "a read differs from the source"
            finally:
                reader.close()
    finally:
        provider.delete_source_resources(  # type: ignore[attr-defined]
            info, env, {**resources, "export_info": export_info, "transfer_id": transfer_id})
    assert backend.inventory() == with_instance, "source resources were left behind"
    assert before <= with_instance
