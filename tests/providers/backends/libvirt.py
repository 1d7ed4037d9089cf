"""The ``libvirt`` provider's backend: the machine's libvirtd (``qemu:///system``, started by
``start_session`` when it is down) with, per test, a ``LibvirtHost`` whose objects are all
named ``<prefix>-...`` (other tests and helpers share the daemon):

- storage pools ``<prefix>-src`` (the source domains' disk files), ``<prefix>-bulk`` and
  ``<prefix>-fast``: the destination storage choices ``bulk`` (raw volumes) and ``fast``
  (qcow2 volumes, ``disk_format`` of the destination environment);
- networks ``<prefix>-lan`` and ``<prefix>-prod``: ``Instance.network`` names (``lan``) are
  these prefixed networks on the host (``network_name``), and ``network_map`` maps both the
  kit's ``lan`` and ``<prefix>-lan`` to ``<prefix>-prod``;
- source instances: shut-off TCG domains with virtio disks written by ``write_disk`` into
  the ``src`` pool's folder; a malformed one names a disk file that does not exist.
"""

from __future__ import annotations

from pathlib import Path

from tests.libvirt_host import LibvirtHost, ensure_libvirtd
from tests.providers.backends import JSON, Instance
from tests.providers.backends import Backend as BaseBackend
from tests.providers.backends.local import write_disk

STORAGE_FORMATS = {"bulk": "raw", "fast": "qcow2"}


class Backend(BaseBackend):
    platform = "libvirt"
    formats = ("raw", "qcow2")
    storage = ("bulk", "fast")

    @classmethod
    def start_session(cls, root: Path) -> dict[str, str]:
        """The system libvirtd, started when it is down; the API server must let projects
        use this host's own daemon."""
        ensure_libvirtd()
        return {"CORIOLIS_LIBVIRT_ALLOW_LOCAL": "1"}

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.host = LibvirtHost(root / "host")
        try:
            self.source_pool = self.host.add_pool("src")
            for pool in STORAGE_FORMATS:
                self.host.add_pool(pool)
            for net in ("lan", "prod"):
                self.host.add_network(net)
        except BaseException:
            self.host.close()
            raise

    def connection_info(self) -> JSON:
        return self.host.connection_info()

    def secrets(self) -> list[str]:
        info = self.connection_info()
        found = [info[k] for k in ("ssh_private_key",) if info.get(k)]
        found += [info["tls"]["client_key"]] if info.get("tls") else []
        return found

    def network_name(self, network: str) -> str:
        return self.host.name(network)

    def _disk_folder(self) -> Path:
        return self.root / "host" / "pools" / "src"

    def create_instance(self, instance: Instance) -> str:
        """A shut-off domain ``<prefix>-<name>``; returns its UUID (the instances' id)."""
        folder = self._disk_folder()
        disks = []
        for i, disk in enumerate(instance.disks):
            path = folder / f"{instance.name}-disk{i}.{disk.format}"
            write_disk(path, disk)
            path.chmod(0o644)
            disks.append((path, disk.format))
        self.source_pool.refresh(0)
        dom = self.host.define_domain(instance.name, disks, self.network_name(instance.network),
                                      mac="52:54:00:12:34:56")
        return str(dom.UUIDString())

    def create_malformed_instance(self, name: str) -> str:
        """A domain whose one disk file does not exist; returns its name."""
        missing = self._disk_folder() / f"{name}-missing.qcow2"
        dom = self.host.define_domain(name, [(missing, "qcow2")], self.network_name("lan"))
        return str(dom.name())

    def destination_env(self, storage: str | None = None) -> JSON:
        pool = storage or "bulk"
        prod = self.network_name("prod")
        return {"network_map": {"lan": prod, self.network_name("lan"): prod},
                "storage_mappings": {"default": self.host.name(pool), "backend_mappings": [],
                                     "disk_mappings": []},
                "disk_format": STORAGE_FORMATS[pool]}

    def inventory(self) -> set[str]:
        """Domains, checkpoints, backup jobs, pools, volumes and networks of this test's
        prefix, and every file under its folder (``LibvirtHost.inventory``)."""
        return self.host.inventory()

    def close(self) -> None:
        self.host.close()
