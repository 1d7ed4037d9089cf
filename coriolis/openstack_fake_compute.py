"""Nova's ``fake.FakeDriver`` with a snapshot that uploads, for the test cloud of
``coriolis.openstack_cloud`` (loaded by its nova-compute from a copy of this file, as
``compute_driver = coriolis_fake_compute.SnapshotFakeDriver``; it imports Nova, so it runs
only in the cloud's virtualenv).

The fake driver keeps no disks: its ``snapshot`` (Nova ``createImage`` of a server booted
from an image) only sets the task state, leaving the Glance image ``queued`` with no data
for ever. Here the snapshot goes the way the libvirt driver's does (task states
``image_pending_upload`` then ``image_uploading``, the bytes uploaded through Nova's Glance
client into the image Nova made), and the bytes are the server's base image: the root disk
of a guest that never wrote to it. Sources: ``nova/virt/fake.py`` and
``nova/virt/libvirt/driver.py`` ``snapshot`` (Nova 33).
"""

import os
import tempfile

import nova.conf  # type: ignore[import-not-found]
from nova import exception  # type: ignore[import-not-found]
from nova.compute import task_states  # type: ignore[import-not-found]
from nova.image import glance  # type: ignore[import-not-found]
from nova.virt import fake  # type: ignore[import-not-found]

CONF = nova.conf.CONF


class SnapshotFakeDriver(fake.FakeDriver):  # type: ignore[misc]
    def snapshot(self, context, instance, image_id, update_task_state):  # type: ignore[no-untyped-def]
        if instance.uuid not in self.instances:
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        api = glance.API()
        base = api.get(context, instance.image_ref)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        fd, path = tempfile.mkstemp(prefix="snapshot-", dir=CONF.instances_path)
        os.close(fd)
        try:
            api.download(context, instance.image_ref, dest_path=path)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            meta = {"disk_format": base.get("disk_format") or "raw",
                    "container_format": base.get("container_format") or "bare"}
            with open(path, "rb") as data:
                api.update(context, image_id, meta, data)
        finally:
            os.unlink(path)
