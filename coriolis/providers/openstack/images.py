"""Glance images of instances (Nova ``createImage``): waited for until ``active``, found by
name, removed.

Nova's ``createImage`` answers at once with a ``queued`` Glance image; the compute host then
uploads the instance's root disk into it, and the image turns ``active``. When the snapshot
fails on the host, Nova deletes the image. Sources: Nova API ``createImage`` server action
(docs.openstack.org/api-ref/compute), Glance v2 images API (image statuses ``queued``,
``saving``, ``active``, ``killed``, ``deleted``: docs.openstack.org/api-ref/image/v2).
"""

from __future__ import annotations

import time
from typing import Any

from coriolis import exceptions
from coriolis.providers.openstack.connection import JSON, http_error, timeout_of


def find_named(conn: Any, name: str) -> list[Any]:
    """The project's images named exactly ``name`` (any status)."""
    return [i for i in conn.image.images(name=name) if i.name == name]


def wait_active(conn: Any, ci: JSON, image: Any, what: str,
                server_id: str | None = None) -> Any:
    """The image once ``active``. ``ProviderError`` naming ``what`` and the image when it
    goes ``killed`` or ``deleted``, is removed (Nova deletes the image of some failed
    snapshots), is still not active once Nova has finished the snapshot (the server
    ``server_id`` has no task state: the compute host uploads before that, so it uploaded
    nothing), or is not active within the endpoint's timeout."""
    deadline = time.monotonic() + timeout_of(ci)
    while True:
        status = _status(conn, image.id)
        if status == "active":
            return conn.image.get_image(image.id)
        if status is None:
            raise exceptions.ProviderError(
                f"{what}: Nova removed Glance image {image.id}: the snapshot failed on the "
                "compute host (see the server's instance actions)")
        if status in ("killed", "deleted"):
            raise exceptions.ProviderError(
                f"{what}: Glance image {image.id} of the instance went to status '{status}'")
        if server_id and _snapshot_over(conn, server_id):
            status = _status(conn, image.id)
            if status != "active":
                raise exceptions.ProviderError(
                    f"{what}: Nova finished the snapshot but Glance image {image.id} of the "
                    f"instance is '{status}': the compute host uploaded nothing (see the "
                    "server's instance actions)")
            continue
        if time.monotonic() > deadline:
            raise exceptions.ProviderError(
                f"{what}: Glance image {image.id} of the instance is '{status}', not "
                f"active, after {timeout_of(ci)} s: the compute host did not upload the "
                "snapshot")
        time.sleep(1)


def _snapshot_over(conn: Any, server_id: str) -> bool:
    """Whether the server has no task (its snapshot, if any, is over on the host)."""
    from openstack import exceptions as os_exc
    try:
        return conn.compute.get_server(server_id).task_state is None
    except os_exc.NotFoundException:
        return True


def _status(conn: Any, image_id: str) -> str | None:
    found = conn.image.find_image(image_id, ignore_missing=True)
    return None if found is None else str(found.status)


def delete(conn: Any, ci: JSON, image_id: str | None) -> None:
    """Delete an image; gone is done."""
    from openstack import exceptions as os_exc
    if not image_id:
        return
    try:
        conn.image.delete_image(image_id, ignore_missing=True)
    except os_exc.NotFoundException:
        return
    except os_exc.SDKException as exc:
        raise http_error(exc, f"cannot delete Glance image {image_id}", ci) from None
