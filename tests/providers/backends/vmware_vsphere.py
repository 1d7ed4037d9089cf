"""The ``vmware_vsphere`` provider's backend: one vcsim (govmomi's vCenter simulator, built
by ``coriolis.vcsim``) per session, and per test VMs named ``<test folder>-<name>`` in DC0:

- source instances: powered-off VMs with a PVSCSI controller and one flat VMDK per disk,
  whose descriptor and ``-flat`` extent the fixture PUTs through ``/folder`` (vcsim's own
  disk files are empty placeholders); their one vmxnet3 NIC is on the DV portgroup
  ``DC0_DVPG0`` whatever the kit's network is (``network_name``);
- a malformed instance: a VM made, then unregistered, as an orphaned VM is: its files stay
  on the datastore but the inventory no longer has it;
- vSphere keeps disk capacities in whole KiB (vcsim ignores ``capacityInBytes``), so
  ``disk_size_unit`` is 1 KiB.

The provider is a source only: the kit's destination checks skip it by capability.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pyVmomi import vim

from coriolis import vcsim
from coriolis.providers.vmware_vsphere import inventory
from coriolis.providers.vmware_vsphere.source import snapshot_trees
from tests.providers.backends import JSON, Instance
from tests.providers.backends import Backend as BaseBackend
from tests.vcsim_host import PORTGROUP, create_vm, destroy_vm, session, write_disk


class Backend(BaseBackend):
    platform = "vmware_vsphere"
    formats = ("raw",)
    disk_size_unit = 1024
    server: ClassVar[vcsim.Vcsim | None] = None

    @classmethod
    def start_session(cls, root: Path) -> dict[str, str]:
        folder = root / "vcsim"
        folder.mkdir(parents=True, exist_ok=True)
        cls.server = vcsim.start(folder)
        return {}

    @classmethod
    def stop_session(cls) -> None:
        if cls.server is not None:
            cls.server.stop()
            cls.server = None

    @property
    def _server(self) -> vcsim.Vcsim:
        assert self.server is not None, "start_session was not called"
        return self.server

    def _name(self, name: str) -> str:
        return f"{self.root.name}-{name}"

    def connection_info(self) -> JSON:
        return dict(self._server.connection_info())

    def secrets(self) -> list[str]:
        return [self._server.password]

    def network_name(self, network: str) -> str:
        return PORTGROUP

    def create_instance(self, instance: Instance) -> str:
        """A powered-off VM whose flat VMDKs hold exactly the disks; returns its moref id."""
        name = self._name(instance.name)
        with session(self._server) as si:
            vm = create_vm(si, name, [disk.size for disk in instance.disks])
            for index, disk in enumerate(instance.disks):
                write_disk(self._server, si, name, index, disk.image())
            return str(vm._moId)

    def create_malformed_instance(self, name: str) -> str:
        full = self._name(name)
        with session(self._server) as si:
            create_vm(si, full, [1024 * 1024]).UnregisterVM()
        return full

    def inventory(self) -> set[str]:
        """This test's VMs and each one's snapshots (the provider's only footprint on a
        source: it reads disks over HTTP and makes nothing else)."""
        found = set()
        with session(self._server) as si:
            for vm in inventory.objects(si, vim.VirtualMachine):
                if vm.name.startswith(f"{self.root.name}-"):
                    found.add(f"vm:{vm.name}")
                    found |= {f"snapshot:{vm.name}/{t.name}" for t in snapshot_trees(si, vm)}
        return found

    def close(self) -> None:
        with session(self._server) as si:
            for vm in list(inventory.objects(si, vim.VirtualMachine)):
                if vm.name.startswith(f"{self.root.name}-"):
                    destroy_vm(si, vm)

    def destination_env(self, storage: str | None = None) -> JSON:
        raise NotImplementedError("vmware_vsphere is a source only")


