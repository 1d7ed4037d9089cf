"""Network configuration for the destination NICs, in whichever tool the guest uses.

Every destination NIC gets DHCP. Its interface keeps the name the guest gave the matching
source NIC (found by the source MAC where the guest's configuration records it, else by
order), pinned to the destination MAC with a systemd ``.link`` file, so that whatever else in
the guest names the interface still works. A source configuration that names no interface
(a netplan entry matching ``en*``, a keyfile matching a MAC) leaves the name to the guest:
tools that can match a NIC by MAC (netplan, NetworkManager) configure it so, with no ``.link``
file. Bonds and VLANs are rebuilt over the destination NICs or dropped, each said in an event
(``bonds``). Configuration of the source interfaces is disabled (kept beside, renamed), never
deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from coriolis.osmorphing import bonds
from coriolis.osmorphing.bonds import BOND, BRIDGE, VLAN, VirtualInterface
from coriolis.osmorphing.guest import EventLog, Guest
from coriolis.osmorphing.nettool import DISABLED, NetworkTool, SourceInterface, norm_mac
from coriolis.osmorphing.network_rh import Ifcfg, NetworkManagerKeyfile, Wicked
from coriolis.osmorphing.profile import DestinationNic

__all__ = ["DISABLED", "Ifcfg", "Ifupdown", "Netplan", "NetworkManagerKeyfile", "NetworkTool",
           "SourceInterface", "Wicked", "choose_tool", "configure_network"]
LINK_DIR = "/etc/systemd/network"
PERSISTENT_NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"


@dataclass
class _Stanza:
    name: str
    method: str  # dhcp, static, manual...
    options: list[str]  # the stanza's option lines, stripped
    file: str

    def option(self, key: str) -> list[str]:
        return next((line.split()[1:] for line in self.options
                     if line.split()[0] == key), [])


class Ifupdown(NetworkTool):
    """Debian's /etc/network/interfaces (and interfaces.d/): stanzas of source interfaces
    are commented out in place, one ``auto NAME / iface NAME inet dhcp`` stanza per NIC;
    bonds (ifenslave ``bond-*`` options) and VLANs (``NAME.ID``, ``vlan-raw-device``) are
    rebuilt as such stanzas. Source: interfaces(5), Debian's ifenslave and vlan packages."""

    name = "ifupdown"
    MAIN = "/etc/network/interfaces"
    _TOP = ("iface", "auto", "allow-", "mapping", "source", "rename")

    def _all_files(self) -> list[str]:
        files = [self.MAIN] if self.guest.exists(self.MAIN) else []
        return files + self._files("/etc/network/interfaces.d", r"[A-Za-z0-9_-]+")

    def _stanzas(self) -> list[_Stanza]:
        found: list[_Stanza] = []
        for file in self._all_files():
            current = None
            for line in self.guest.read_text(file).splitlines():
                words = line.split()
                if not words or words[0].startswith("#"):
                    continue
                if words[0].startswith(self._TOP):
                    current = None
                    if words[0] == "iface" and len(words) >= 4 and words[1] != "lo" \
                            and words[1] not in [s.name for s in found]:
                        current = _Stanza(words[1], words[3], [], file)
                        found.append(current)
                elif current is not None:
                    current.options.append(" ".join(words))
        return found

    @staticmethod
    def _kind(stanza: _Stanza) -> str | None:
        keys = {line.split()[0] for line in stanza.options}
        if stanza.option("bond-slaves") or "bond-mode" in keys:
            return BOND
        if "bridge_ports" in keys or "bridge-ports" in keys:
            return BRIDGE
        if "vlan-raw-device" in keys or "vlan_raw_device" in keys \
                or re.fullmatch(r".+\.\d+", stanza.name):
            return VLAN
        return None

    def source_interfaces(self) -> list[SourceInterface]:
        return [SourceInterface(s.name, None, s.file) for s in self._stanzas()
                if self._kind(s) is None]

    def virtual_interfaces(self) -> list[VirtualInterface]:
        stanzas = self._stanzas()
        found = []
        for s in stanzas:
            kind = self._kind(s)
            address = " ".join(s.option("address"))
            addressing = f"{s.method} {address}".strip()
            if kind == BOND:
                members = [m for m in s.option("bond-slaves") if m != "none"]
                members += [o.name for o in stanzas if o.option("bond-master") == [s.name]
                            and o.name not in members]
                options = [line for line in s.options if line.startswith("bond-")
                           and line.split()[0] not in ("bond-slaves", "bond-master")]
                found.append(VirtualInterface(BOND, s.name, s.file, members,
                                              addressing=addressing, options=options))
            elif kind == VLAN:
                parent = (s.option("vlan-raw-device") or s.option("vlan_raw_device")
                          or [s.name.rsplit(".", 1)[0]])[0]
                vid = re.search(r"(\d+)$", s.name)
                found.append(VirtualInterface(VLAN, s.name, s.file, [parent],
                                              int(vid.group(1)) if vid else None, addressing))
            elif kind == BRIDGE:
                ports = s.option("bridge_ports") or s.option("bridge-ports")
                found.append(VirtualInterface(BRIDGE, s.name, s.file, ports,
                                              addressing=addressing))
        return found

    def disable_sources(self, interfaces: list[SourceInterface],
                        virtuals: Sequence[VirtualInterface] = ()) -> None:
        names = {i.name for i in interfaces if i.name} | {v.name for v in virtuals}
        files = {i.file for i in interfaces} | {v.file for v in virtuals}
        for file in sorted(files):
            out, disabled = [], False
            for line in self.guest.read_text(file).splitlines():
                words = line.split()
                if words and words[0].startswith(self._TOP):
                    disabled = words[0] == "iface" and len(words) > 1 and words[1] in names
                    if not disabled and (words[0] == "auto" or words[0].startswith("allow-")):
                        kept = [w for w in words[1:] if w not in names]
                        if len(kept) < len(words) - 1:
                            out.append(f"# coriolis: {line}")
                            if kept:
                                out.append(" ".join([words[0], *kept]))
                            continue
                out.append(f"# coriolis: {line}" if disabled and line.strip() else line)
            self.guest.write_text(file, "\n".join(out) + "\n")
            self.log(f"network: {file}: stanzas of {', '.join(sorted(names))} commented out")

    def _append(self, stanza: str, what: str) -> None:
        text = self.guest.read_text(self.MAIN) if self.guest.exists(self.MAIN) else ""
        self.guest.write_text(self.MAIN, text.rstrip("\n") + "\n\n# Added by Coriolis OS "
                                         f"morphing\n{stanza}")
        self.log(f"network: {self.MAIN}: {what}")

    def configure(self, name: str | None, mac: str | None) -> None:
        self._append(f"auto {name}\niface {name} inet dhcp\n", f"{name} configured with DHCP")

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        names = " ".join(n for n, _ in members)
        lines = [f"    bond-slaves {names}", *(f"    {o}" for o in bond.options)]
        self._append(f"auto {bond.name}\niface {bond.name} inet dhcp\n" + "\n".join(lines)
                     + "\n", f"bond {bond.name} over {names} configured with DHCP")

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        self._append(f"auto {vlan.name}\niface {vlan.name} inet dhcp\n"
                     f"    vlan-raw-device {vlan.members[0]}\n",
                     f"VLAN {vlan.name} configured with DHCP")


class Netplan(NetworkTool):
    """netplan YAML (/etc/netplan/*.yaml). An ``ethernets`` entry's id is its interface name
    unless it has ``match:`` (then the name is ``set-name``, or a ``match: name`` without
    wildcards; otherwise the guest names it); ``bonds`` and ``vlans`` ids are names, their
    ``interfaces``/``link`` name ethernets by id. Source: netplan's YAML reference."""

    name = "netplan"
    matches_by_mac = True
    DIR = "/etc/netplan"
    OUT = "/etc/netplan/50-coriolis.yaml"

    def _docs(self) -> list[tuple[str, dict[str, Any]]]:
        found = []
        for file in self._files(self.DIR, r".+\.ya?ml"):
            if file == self.OUT:
                continue
            try:
                doc = yaml.safe_load(self.guest.read_text(file)) or {}
            except yaml.YAMLError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("network"), dict):
                found.append((file, doc["network"]))
        return found

    @staticmethod
    def _name(key: str, conf: dict[str, Any]) -> str | None:
        if conf.get("set-name"):
            return str(conf["set-name"])
        if "match" not in conf:
            return key
        pattern = str((conf.get("match") or {}).get("name") or "")
        return pattern if pattern and not re.search(r"[*?\[]", pattern) else None

    def source_interfaces(self) -> list[SourceInterface]:
        found = []
        for file, net in self._docs():
            for key, conf in (net.get("ethernets") or {}).items():
                conf = conf or {}
                mac = (conf.get("match") or {}).get("macaddress")
                found.append(SourceInterface(self._name(key, conf), norm_mac(mac), file))
        return found

    def virtual_interfaces(self) -> list[VirtualInterface]:
        found = []
        for file, net in self._docs():
            ids = {k: self._name(k, c or {}) for k, c in (net.get("ethernets") or {}).items()}
            for kind, section in ((BOND, "bonds"), (VLAN, "vlans"), (BRIDGE, "bridges")):
                for key, conf in (net.get(section) or {}).items():
                    conf = conf or {}
                    addressing = ", ".join(
                        [str(a) for a in conf.get("addresses") or []]
                        + (["dhcp4"] if conf.get("dhcp4") else []))
                    links = conf.get("interfaces") or ([conf["link"]] if "link" in conf else [])
                    members = [ids.get(i, i) or f"{i} (unnamed)" for i in links]
                    found.append(VirtualInterface(
                        kind, str(key), file, members, conf.get("id"), addressing,
                        conf.get("parameters")))
        return found

    def _update(self, section: str, key: str, entry: dict[str, Any]) -> None:
        doc: dict[str, Any] = {"network": {"version": 2}}
        if self.guest.exists(self.OUT):
            doc = yaml.safe_load(self.guest.read_text(self.OUT)) or doc
        doc["network"].setdefault(section, {})[key] = entry
        self.guest.write_text(self.OUT, yaml.safe_dump(doc, sort_keys=False))
        self.guest.run(f"chmod 600 {self.OUT}")

    @staticmethod
    def _ethernet(name: str | None, mac: str | None) -> dict[str, Any]:
        if not mac:
            return {}
        return {"match": {"macaddress": mac}, **({"set-name": name} if name else {})}

    def configure(self, name: str | None, mac: str | None) -> None:
        key = name or f"coriolis-{(mac or '').replace(':', '')}"
        self._update("ethernets", key, {**self._ethernet(name, mac), "dhcp4": True})
        what = name or f"the NIC with MAC {mac} (named by the guest)"
        self.log(f"network: {self.OUT}: {what} configured with DHCP")

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        for name, mac in members:
            self._update("ethernets", name, self._ethernet(name, mac))
        entry: dict[str, Any] = {"interfaces": [n for n, _ in members]}
        if bond.options:
            entry["parameters"] = bond.options
        self._update("bonds", bond.name, {**entry, "dhcp4": True})
        self.log(f"network: {self.OUT}: bond {bond.name} over "
                 f"{', '.join(n for n, _ in members)} configured with DHCP")

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        self._update("vlans", vlan.name, {"id": vlan.vlan_id, "link": vlan.members[0],
                                          "dhcp4": True})
        self.log(f"network: {self.OUT}: VLAN {vlan.name} configured with DHCP")


def _persistent_net_names(guest: Guest) -> dict[str, str]:
    """MAC → name from old udev persistent-net rules."""
    if not guest.exists(PERSISTENT_NET_RULES):
        return {}
    names = {}
    for line in guest.read_text(PERSISTENT_NET_RULES).splitlines():
        mac = re.search(r'ATTR\{address\}=="([0-9a-fA-F:]+)"', line)
        name = re.search(r'NAME="([^"]+)"', line)
        if mac and name:
            names[mac.group(1).lower()] = name.group(1)
    return names


def choose_tool(guest: Guest, log: EventLog, order: list[type[NetworkTool]],
                default: type[NetworkTool]) -> NetworkTool:
    """The first tool in ``order`` that configures an interface of the guest, else
    ``default`` (the family's usual tool)."""
    for tool_class in order:
        tool = tool_class(guest, log)
        if tool.in_use():
            return tool
    return default(guest, log)


def configure_network(guest: Guest, log: EventLog, nics: list[DestinationNic],
                      source_macs: list[str | None], tool: NetworkTool, *,
                      tagged_vlans: bool = False) -> list[str | None]:
    """Disable the source interfaces' configuration and configure every destination NIC with
    DHCP, rebuilding the source's bonds and VLANs over them where ``bonds.plan`` keeps them;
    returns the interface names given to the destination NICs (None: left to the guest)."""
    sources = tool.source_interfaces()
    virtuals = tool.virtual_interfaces()
    by_mac = {**_persistent_net_names(guest),
              **{s.mac: s.name for s in sources if s.mac and s.name}}
    # By the source MAC first; the NICs it leaves take the names nobody took, in order.
    names: list[str | None] = [
        by_mac.get(norm_mac(source_macs[i] if i < len(source_macs) else None) or "")
        for i in range(len(nics))]
    names = [n if n not in names[:i] else None for i, n in enumerate(names)]
    free = [n for n in dict.fromkeys(s.name for s in sources if s.name) if n not in names]
    for i, nic in enumerate(nics):
        if names[i] is None and free:
            names[i] = free.pop(0)
        if names[i] is None and not (tool.matches_by_mac and nic.mac):
            names[i] = f"eth{i}"
    kept = bonds.plan(virtuals, names, can_rebuild=tool.rebuilds_virtual,
                      tagged_vlans=tagged_vlans, log=log)
    if sources or virtuals:
        tool.disable_sources(sources, virtuals)
    if guest.exists(PERSISTENT_NET_RULES):
        guest.rename(PERSISTENT_NET_RULES, PERSISTENT_NET_RULES + DISABLED)
        log(f"network: {PERSISTENT_NET_RULES} (source MACs) kept as "
            f"{PERSISTENT_NET_RULES}{DISABLED}")
    macs = {}
    for nic, name in zip(nics, names, strict=True):
        mac = norm_mac(nic.mac)
        if name is None:
            log(f"network: the source configuration names no interface for the NIC with MAC "
                f"{mac}; the guest names it")
        elif mac:
            guest.mkdir_p(LINK_DIR)
            link = f"{LINK_DIR}/10-coriolis-{name}.link"
            guest.write_text(link, f"[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n")
            log(f"network: {link}: the NIC with MAC {mac} is named {name}")
        else:
            log(f"network: the destination does not say the MAC of NIC {name}; its name is "
                "left to the guest")
        if name is not None and kept.bond_of(name):
            macs[name] = mac
            continue
        tool.configure(name, mac)
    for bond, members in kept.bonds:
        tool.configure_bond(bond, [(m, macs.get(m)) for m in members])
    for vlan in kept.vlans:
        tool.configure_vlan(vlan)
    return names
