"""Glance images of instances (Nova ``createImage``): waited for until ``active``, found by
name, removed.

Nova's ``createImage`` answers at once with a ``queued`` Glance image; the compute host then
uploads the instance's root disk into it, and the image turns ``active``. When the snapshot
fails on the host, Nova deletes the image. Sources: Nova API ``createImage`` server action
(docs.openstack.org/api-ref/compute), Glance v2 images API (image statuses ``queued``,
``saving``, ``active``, ``killed``, ``deleted``: docs.openstack.org/api-ref/image/v2).
"""

from __future__ import annotations

from typing import Any

from coriolis import exceptions
from coriolis.providers.openstack.connection import JSON, http_error, timeout_of


def find_named(conn: Any, name: str) -> list[Any]:
    """The project's images named exactly ``name`` (any status)."""
    return [i for i in conn.image.images(name=name) if i.name == name]


def wait_active(conn: Any, ci: JSON, image: Any, what: str) -> Any:
    """The image once ``active``. ``ProviderError`` naming ``what`` and the image when it
    goes ``killed``, is removed (Nova deletes the image of a failed snapshot), or is not
    active within the endpoint's timeout (then its status says how far the upload got)."""
    from openstack import exceptions as os_exc
    try:
        return conn.image.wait_for_status(image, status="active",
                                          failures=["killed", "deleted"], interval=1,
                                          wait=timeout_of(ci))
    except os_exc.NotFoundException:
        status = None
    except os_exc.ResourceFailure:
        status = _status(conn, image.id)
    except os_exc.ResourceTimeout:
        status = _status(conn, image.id)
        if status is not None and status not in ("killed", "deleted"):
            raise exceptions.ProviderError(
                f"{what}: Glance image {image.id} of the instance is '{status}', not "
                f"active, after {timeout_of(ci)} s: the compute host did not upload the "
                "snapshot") from None
    if status is None:
        raise exceptions.ProviderError(
            f"{what}: Nova removed Glance image {image.id}: the snapshot failed on the "
            "compute host (see the server's instance actions)")
    raise exceptions.ProviderError(
        f"{what}: Glance image {image.id} of the instance went to status '{status}'")


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
