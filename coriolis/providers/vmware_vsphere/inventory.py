"""What a vSphere inventory holds, as Coriolis describes it: VMs (``export_info``),
networks (standard and distributed portgroups), datastores, datacenters, folders, clusters.

Platform doc: vSphere Web Services API reference, ``VirtualMachine.config``
(``VirtualMachineConfigInfo``: ``hardware.device``, ``firmware``, ``guestId``,
``changeTrackingEnabled``), ``VirtualDisk`` backings (``FlatVer2BackingInfo``),
``VirtualEthernetCard`` backings (standard ``NetworkBackingInfo``, distributed
``DistributedVirtualPortBackingInfo``).

A VM's ``id`` is its managed object id (``vm-57``); ``get_instance`` also finds it by name,
by inventory path (``DC0/vm/folder/name``) or by instance UUID. A name used by VMs in two
folders is refused, naming both paths. Disk ids are ``<bus><bus number>-<unit>``
(``scsi0-0``, ``sata0-1``), NIC ids the device key.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from coriolis import exceptions

JSON = dict[str, Any]

CONTROLLERS: list[tuple[type, str, str]] = [
    (vim.vm.device.ParaVirtualSCSIController, "scsi", "pvscsi"),
    (vim.vm.device.VirtualLsiLogicSASController, "scsi", "lsilogic-sas"),
    (vim.vm.device.VirtualLsiLogicController, "scsi", "lsilogic"),
    (vim.vm.device.VirtualBusLogicController, "scsi", "buslogic"),
    (vim.vm.device.VirtualAHCIController, "sata", "ahci"),
    (vim.vm.device.VirtualSATAController, "sata", "sata"),
    (vim.vm.device.VirtualNVMEController, "nvme", "nvme"),
    (vim.vm.device.VirtualIDEController, "ide", "ide"),
]
NIC_TYPES: list[tuple[type, str]] = [
    (vim.vm.device.VirtualVmxnet3, "vmxnet3"), (vim.vm.device.VirtualVmxnet2, "vmxnet2"),
    (vim.vm.device.VirtualE1000e, "e1000e"), (vim.vm.device.VirtualE1000, "e1000"),
    (vim.vm.device.VirtualPCNet32, "pcnet32"), (vim.vm.device.VirtualSriovEthernetCard, "sriov"),
]


def objects(si: Any, kind: type) -> list[Any]:
    content = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def datacenter_of(entity: Any) -> Any:
    node = entity
    while node is not None and not isinstance(node, vim.Datacenter):
        node = node.parent
    return node


def inventory_path(entity: Any) -> str:
    """``DC0/vm/folder/name``: the names from the datacenter down."""
    names = []
    node = entity
    while node is not None and node.parent is not None:  # the root folder has no parent
        names.append(node.name)
        if isinstance(node, vim.Datacenter):
            break
        node = node.parent
    return "/".join(reversed(names))


def _controller(dev: Any) -> tuple[str, str]:
    for cls, bus, kind in CONTROLLERS:
        if isinstance(dev, cls):
            return bus, kind
    return "unknown", type(dev).__name__


def _provisioning(backing: Any) -> str:
    if getattr(backing, "thinProvisioned", False):
        return "thin"
    return "thick-eager" if getattr(backing, "eagerlyScrub", False) else "thick-lazy"


def _network_name(backing: Any, portgroups: dict[str, str]) -> tuple[str, str | None]:
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.DistributedVirtualPortBackingInfo):
        key = str(backing.port.portgroupKey)
        return portgroups.get(key, key), key
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.NetworkBackingInfo):
        return backing.deviceName or (backing.network.name if backing.network else ""), None
    if isinstance(backing, vim.vm.device.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        return backing.opaqueNetworkId, None
    return "", None


def portgroup_names(si: Any) -> dict[str, str]:
    return {pg.key: pg.name for pg in objects(si, vim.dvs.DistributedVirtualPortgroup)}


def devices(hardware_devices: list[Any], portgroups: dict[str, str]) -> JSON:
    """``devices`` of ``export_info`` from a ``hardware.device`` list."""
    controllers = {}
    for dev in hardware_devices:
        if isinstance(dev, vim.vm.device.VirtualController):
            bus, kind = _controller(dev)
            controllers[dev.key] = {"id": str(dev.key), "bus": bus, "type": kind,
                                    "bus_number": dev.busNumber}
    disks, nics, cdroms = [], [], []
    for dev in hardware_devices:
        if isinstance(dev, vim.vm.device.VirtualDisk):
            ctl = controllers.get(int(dev.controllerKey or 0),
                                  {"bus": "unknown", "type": "unknown", "bus_number": 0})
            backing = dev.backing
            size = dev.capacityInBytes or (dev.capacityInKB or 0) * 1024
            path = getattr(backing, "fileName", None)
            datastore = path[1:path.index("]")] if path and path.startswith("[") else None
            disks.append({
                "id": f"{ctl['bus']}{ctl['bus_number']}-{dev.unitNumber}",
                "size_bytes": int(size), "format": "raw", "bus": ctl["bus"],
                "controller": ctl["type"], "storage_backend": datastore,
                "datastore_path": path, "provisioning": _provisioning(backing),
                "backing": type(backing).__name__.rsplit(".", 1)[-1],
                "device_key": dev.key, "unit_number": dev.unitNumber,
            })
        elif isinstance(dev, vim.vm.device.VirtualEthernetCard):
            network, portgroup_key = _network_name(dev.backing, portgroups)
            adapter = next((name for cls, name in NIC_TYPES if isinstance(dev, cls)), "unknown")
            nics.append({"id": str(dev.key), "mac_address": dev.macAddress,
                         "network_name": network, "portgroup_key": portgroup_key,
                         "adapter_type": adapter})
        elif isinstance(dev, vim.vm.device.VirtualCdrom):
            cdroms.append({"id": str(dev.key)})
    return {"disks": disks, "nics": nics, "controllers": list(controllers.values()),
            "cdroms": cdroms, "floppies": [], "serial_ports": []}


def _placement(vm: Any) -> JSON:
    host = vm.runtime.host
    compute = host.parent if host is not None else None
    dc = datacenter_of(vm)
    path = inventory_path(vm)
    return {"datacenter": dc.name if dc else None,
            "folder": path.rsplit("/", 1)[0] if "/" in path else None,
            "path": path,
            "host": host.name if host is not None else None,
            "cluster": compute.name if isinstance(compute, vim.ClusterComputeResource)
            else None}


def os_type(guest_id: str | None) -> str:
    guest = (guest_id or "").lower()
    return "windows" if guest.startswith("win") else "linux"


def describe_vm(vm: Any, portgroups: dict[str, str], full: bool = True) -> JSON:
    """``export_info`` of a VM (without ``devices`` and ``power_state`` when not
    ``full``). ``InvalidInput`` naming the VM when it has no readable configuration."""
    config = vm.config
    if config is None:
        raise exceptions.InvalidInput(
            f"VM '{vm.name}' has no readable configuration (inaccessible or orphaned)")
    info: JSON = {
        "id": vm._moId, "name": vm.name, "instance_name": vm.name,
        "instance_uuid": config.instanceUuid, "bios_uuid": config.uuid,
        "num_cpu": config.hardware.numCPU, "memory_mb": config.hardware.memoryMB,
        "os_type": os_type(config.guestId), "guest_id": config.guestId,
        "firmware_type": "EFI" if config.firmware == "efi" else "BIOS",
        "flavor_name": None, "change_tracking": bool(config.changeTrackingEnabled),
        **_placement(vm),
    }
    if full:
        info["power_state"] = str(vm.runtime.powerState)
        info["devices"] = devices(config.hardware.device, portgroups)
    return info


def list_vms(si: Any) -> list[JSON]:
    portgroups = portgroup_names(si)
    result = []
    for vm in objects(si, vim.VirtualMachine):
        try:
            if vm.config is not None and vm.config.template:
                continue
            result.append(describe_vm(vm, portgroups, full=False))
        except exceptions.InvalidInput as exc:
            result.append({"id": vm._moId, "name": vm.name, "instance_name": vm.name,
                           "error": str(exc)})
    return result


def find_vm(si: Any, instance: str) -> Any:
    """The VM ``instance`` names (moref id, instance or BIOS UUID, inventory path, name).
    ``InstanceNotFound`` naming it; ``InvalidInput`` naming both paths when a name is used
    by VMs in two folders."""
    vms = objects(si, vim.VirtualMachine)
    for vm in vms:
        if vm._moId == instance:
            return vm
    if "/" in instance:
        matches = [vm for vm in vms if inventory_path(vm) == instance.strip("/")]
    else:
        matches = [vm for vm in vms if vm.name == instance]
        if not matches:
            matches = [vm for vm in vms if vm.config is not None
                       and instance.lower() in (str(vm.config.instanceUuid).lower(),
                                                str(vm.config.uuid).lower())]
    if not matches:
        raise exceptions.InstanceNotFound(f"no VM '{instance}' on this vSphere endpoint")
    if len(matches) > 1:
        paths = " and ".join(f"'{inventory_path(vm)}'" for vm in matches)
        raise exceptions.InvalidInput(
            f"VM name '{instance}' is used by {len(matches)} VMs: {paths}; name one by its "
            "path or id")
    return matches[0]


def find_by_id(si: Any, moref: str) -> Any | None:
    """The VM with managed object id ``moref``, or None when it is gone."""
    return next((vm for vm in objects(si, vim.VirtualMachine) if vm._moId == moref), None)


def list_networks(si: Any) -> list[JSON]:
    result = []
    for net in objects(si, vim.Network):
        if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
            switch: Any = net.config.distributedVirtualSwitch
            uplinks = {pg._moId for pg in switch.config.uplinkPortgroup or []}
            if net.config.uplink or net._moId in uplinks:
                continue
            result.append({"id": net._moId, "name": net.name, "type": "distributed",
                           "portgroup_key": net.key,
                           "switch": switch.name})
        else:
            result.append({"id": net._moId, "name": net.name, "type": "standard"})
    return result


def list_datastores(si: Any) -> list[JSON]:
    result = []
    for ds in objects(si, vim.Datastore):
        summary = ds.summary
        dc = datacenter_of(ds)
        result.append({"id": ds._moId, "name": ds.name, "additional_provider_properties": {
            "type": summary.type, "capacity_bytes": summary.capacity,
            "free_bytes": summary.freeSpace, "accessible": bool(summary.accessible),
            "datacenter": dc.name if dc else None}})
    return result


def source_options(si: Any) -> list[JSON]:
    datacenters = [dc.name for dc in objects(si, vim.Datacenter)]
    folders = sorted(inventory_path(f) for f in objects(si, vim.Folder)
                     if datacenter_of(f) is not None and "VirtualMachine" in f.childType)
    clusters = sorted(inventory_path(c) for c in objects(si, vim.ClusterComputeResource))
    return [{"name": "datacenter", "values": datacenters, "config_default": None},
            {"name": "folder", "values": folders, "config_default": None},
            {"name": "cluster", "values": clusters, "config_default": None}]
