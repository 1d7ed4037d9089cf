"""What the destination platform needs of a guest, as its import provider says it
(``ImportProvider.os_morphing_profile``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Guest agents of the platforms guests come from; a morpher removes those the destination does
# not keep. Package names as Debian, RHEL and SUSE ship them.
FOREIGN_AGENTS: dict[str, tuple[str, ...]] = {
    "vmware": ("open-vm-tools", "open-vm-tools-desktop", "open-vm-tools-sdmp"),
    "hyperv": ("hyperv-daemons", "hyperv-daemons-license", "hypervkvpd", "hypervvssd",
               "hypervfcopyd", "hyper-v"),
    "azure": ("walinuxagent", "WALinuxAgent", "python-azure-agent"),
    "aws": ("amazon-ssm-agent", "ec2-instance-connect", "aws-cfn-bootstrap"),
    "gce": ("google-guest-agent", "google-compute-engine", "google-osconfig-agent"),
    "xen": ("xe-guest-utilities", "xen-tools"),
}

VIRTIO_MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_console")


@dataclass
class DestinationNic:
    mac: str | None
    network: str | None = None


@dataclass
class DestinationProfile:
    platform: str
    disk_bus: str = "virtio"
    nic_model: str = "virtio"
    nics: list[DestinationNic] = field(default_factory=list)
    # cloud-init datasources the destination serves, in order; empty: leave cloud-init alone.
    cloud_init_datasources: list[str] = field(default_factory=list)
    serial_console: str | None = "ttyS0"
    # The platforms whose agents stay (the destination's own).
    keep_agents_of: list[str] = field(default_factory=list)
    # Packages the destination wants in the guest (installed only if the guest has them
    # already: the appliance has no network, so missing ones are reported, not fetched).
    required_packages: list[str] = field(default_factory=list)
    # The destination's networks carry 802.1Q-tagged frames to the NICs, so the guest's VLANs
    # are rebuilt (coriolis.osmorphing.bonds); False: they are dropped, each said in an event.
    tagged_vlans: bool = False
    # Windows: carry the source's static IPs to the new NICs (a first-boot script by MAC).
    keep_static_ips: bool = False

    @property
    def modules(self) -> tuple[str, ...]:
        return VIRTIO_MODULES if "virtio" in (self.disk_bus, self.nic_model) else ()

    def agents_to_remove(self) -> list[str]:
        return [pkg for platform, pkgs in FOREIGN_AGENTS.items()
                if platform not in self.keep_agents_of for pkg in pkgs]

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> DestinationProfile:
        nics = [DestinationNic(n.get("mac"), n.get("network")) for n in value.get("nics", [])]
        return cls(platform=value.get("platform", "unknown"),
                   disk_bus=value.get("disk_bus", "virtio"),
                   nic_model=value.get("nic_model", "virtio"), nics=nics,
                   cloud_init_datasources=list(value.get("cloud_init_datasources", [])),
                   serial_console=value.get("serial_console", "ttyS0"),
                   keep_agents_of=list(value.get("keep_agents_of", [])),
                   required_packages=list(value.get("required_packages", [])),
                   tagged_vlans=bool(value.get("tagged_vlans", False)),
                   keep_static_ips=bool(value.get("keep_static_ips", False)))
