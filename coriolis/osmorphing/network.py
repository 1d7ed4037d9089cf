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
from coriolis.osmorphing.profile import DestinationNic

DISABLED = ".coriolis-disabled"
LINK_DIR = "/etc/systemd/network"
PERSISTENT_NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"


@dataclass
class SourceInterface:
    name: str | None  # None: the configuration does not name it (matched by pattern or MAC)
    mac: str | None
    file: str


def _norm_mac(mac: str | None) -> str | None:
    return mac.strip().strip("'\"").lower() if mac else None


def _kv_file(text: str) -> dict[str, str]:
    """KEY=value lines (ifcfg, wicked), quotes removed."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


class NetworkTool:
    """One guest network configuration tool: how to find the source interfaces, disable
    them and configure the destination ones."""

    name = ""
    matches_by_mac = False  # can configure a NIC by MAC alone, leaving its name to the guest
    rebuilds_virtual = True  # writes bonds and VLANs (configure_bond, configure_vlan)

    def __init__(self, guest: Guest, log: EventLog) -> None:
        self.guest = guest
        self.log = log

    def in_use(self) -> bool:
        return bool(self.source_interfaces() or self.virtual_interfaces())

    def source_interfaces(self) -> list[SourceInterface]:
        """The physical (Ethernet) interfaces the guest configures."""
        raise NotImplementedError

    def virtual_interfaces(self) -> list[VirtualInterface]:
        """The bonds, VLANs and bridges the guest configures."""
        return []

    def disable_sources(self, interfaces: list[SourceInterface],
                        virtuals: Sequence[VirtualInterface] = ()) -> None:
        for file in sorted({i.file for i in interfaces} | {v.file for v in virtuals}):
            self._disable_file(file)

    def configure(self, name: str | None, mac: str | None) -> None:
        """DHCP on one NIC; ``name`` None (only when ``matches_by_mac``): by MAC."""
        raise NotImplementedError

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        """The bond with DHCP over ``members`` (name, MAC), which get no addresses."""
        raise NotImplementedError

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        raise NotImplementedError

    def _disable_file(self, path: str) -> None:
        target = self._disabled_name(path)
        self.guest.rename(path, target)
        self.log(f"network: {path} (source interfaces) kept as {target}")

    def _disabled_name(self, path: str) -> str:
        return path + DISABLED

    def _files(self, folder: str, pattern: str) -> list[str]:
        if not self.guest.is_dir(folder):
            return []
        return [f"{folder}/{n}" for n in self.guest.listdir(folder) if re.fullmatch(pattern, n)]


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
                found.append(SourceInterface(self._name(key, conf), _norm_mac(mac), file))
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


def _ini(text: str) -> dict[str, dict[str, str]]:
    """A keyfile's sections: {section: {key: value}}."""
    sections: dict[str, dict[str, str]] = {}
    current = sections.setdefault("", {})
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return sections


class NetworkManagerKeyfile(NetworkTool):
    """NetworkManager keyfiles (/etc/NetworkManager/system-connections). Source:
    nm-settings-keyfile(5), nm-settings-nmcli(5) (``master``/``controller``, ``slave-type``/
    ``port-type``, the ``[bond]`` and ``[vlan]`` settings)."""

    name = "NetworkManager"
    matches_by_mac = True
    DIR = "/etc/NetworkManager/system-connections"
    _ETHERNET = ("ethernet", "802-3-ethernet")

    def _connections(self) -> list[tuple[str, dict[str, dict[str, str]]]]:
        return [(f, _ini(self.guest.read_text(f)))
                for f in self._files(self.DIR, r".+\.nmconnection|[^.]+")]

    def source_interfaces(self) -> list[SourceInterface]:
        found = []
        for file, conf in self._connections():
            conn = conf.get("connection", {})
            if conn.get("type") not in self._ETHERNET:
                continue
            mac = conf.get("ethernet", conf.get("802-3-ethernet", {})).get("mac-address")
            found.append(SourceInterface(conn.get("interface-name") or None, _norm_mac(mac),
                                         file))
        return found

    def virtual_interfaces(self) -> list[VirtualInterface]:
        conns = self._connections()
        # master=/controller= names the bond by interface name, connection id or UUID.
        aliases = {}
        for _, conf in conns:
            conn = conf.get("connection", {})
            for alias in (conn.get("id"), conn.get("uuid"), conn.get("interface-name")):
                if alias:
                    aliases[alias] = conn.get("interface-name") or conn.get("id", "")
        found = []
        kinds = {"bond": BOND, "vlan": VLAN, "bridge": BRIDGE}
        for file, conf in conns:
            conn = conf.get("connection", {})
            kind = kinds.get(conn.get("type", ""))
            if kind is None:
                continue
            name = conn.get("interface-name") or conn.get("id", "")
            ipv4 = conf.get("ipv4", {})
            addressing = ", ".join(v for k, v in sorted(ipv4.items())
                                   if k.startswith("address")) or ipv4.get("method", "")
            if kind == VLAN:
                vlan = conf.get("vlan", {})
                parent = aliases.get(vlan.get("parent", ""), vlan.get("parent", ""))
                found.append(VirtualInterface(VLAN, name, file, [parent],
                                              int(vlan.get("id", "0")), addressing))
                continue
            members = []
            for _, other in conns:
                oc = other.get("connection", {})
                master = oc.get("master") or oc.get("controller")
                if master and aliases.get(master) == name and oc.get("type") in self._ETHERNET:
                    members.append(oc.get("interface-name") or f"{oc.get('id')} (unnamed)")
            found.append(VirtualInterface(kind, name, file, members, addressing=addressing,
                                          options=conf.get("bond", {})))
        return found

    def _disabled_name(self, path: str) -> str:
        # NetworkManager reads every file of its folder whatever its name: move them out.
        folder = self.DIR + DISABLED
        self.guest.mkdir_p(folder)
        return f"{folder}/{path.rsplit('/', 1)[1]}"

    def _write(self, key: str, sections: dict[str, dict[str, str]], what: str) -> None:
        path = f"{self.DIR}/coriolis-{key}.nmconnection"
        lines = []
        for section, values in sections.items():
            lines += [f"[{section}]", *(f"{k}={v}" for k, v in values.items()), ""]
        self.guest.mkdir_p(self.DIR)
        self.guest.write_text(path, "\n".join(lines))
        self.guest.run(f"chmod 600 '{path}'")  # NetworkManager ignores keyfiles others can read
        self.log(f"network: {path}: {what}")

    @staticmethod
    def _nic(name: str | None, mac: str | None, **connection: str) \
            -> dict[str, dict[str, str]]:
        conn = {"id": name or f"coriolis {mac}", "type": "ethernet",
                **({"interface-name": name} if name else {}), **connection}
        return {"connection": conn, **({"ethernet": {"mac-address": mac}} if mac else {})}

    _DHCP = {"ipv4": {"method": "auto"}, "ipv6": {"method": "auto"}}

    def configure(self, name: str | None, mac: str | None) -> None:
        key = name or (mac or "").replace(":", "")
        self._write(key, {**self._nic(name, mac), **self._DHCP},
                    f"{name or f'the NIC with MAC {mac} (named by the guest)'} configured "
                    "with DHCP")

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        for name, mac in members:
            self._write(name, self._nic(name, mac, master=bond.name, **{"slave-type": "bond"}),
                        f"{name} is a port of bond {bond.name}")
        self._write(bond.name, {"connection": {"id": bond.name, "type": "bond",
                                               "interface-name": bond.name},
                                "bond": dict(bond.options or {}), **self._DHCP},
                    f"bond {bond.name} configured with DHCP")

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        self._write(vlan.name, {"connection": {"id": vlan.name, "type": "vlan",
                                               "interface-name": vlan.name},
                                "vlan": {"id": str(vlan.vlan_id), "parent": vlan.members[0]},
                                **self._DHCP},
                    f"VLAN {vlan.name} configured with DHCP")


class Ifcfg(NetworkTool):
    """RHEL-family /etc/sysconfig/network-scripts/ifcfg-NAME (initscripts and NetworkManager's
    ifcfg-rh plugin). Source: nm-settings-ifcfg-rh(5), the initscripts documentation
    (``TYPE=Bond``, ``BONDING_OPTS``, ``MASTER``/``SLAVE``, ``VLAN=yes``/``PHYSDEV``)."""

    name = "ifcfg"
    DIR = "/etc/sysconfig/network-scripts"

    def _configs(self) -> list[tuple[str, str, dict[str, str]]]:
        """(file, interface name, values) of every ifcfg file but the loopback's."""
        found = []
        for file in self._files(self.DIR, r"ifcfg-(?!lo$).+"):
            values = _kv_file(self.guest.read_text(file))
            found.append((file, values.get("DEVICE") or file.rsplit("ifcfg-", 1)[1], values))
        return found

    def _kind(self, values: dict[str, str]) -> str | None:
        if values.get("TYPE") == "Bond" or values.get("BONDING_MASTER") == "yes":
            return BOND
        if values.get("VLAN") == "yes" or values.get("TYPE") == "Vlan":
            return VLAN
        if values.get("TYPE") == "Bridge":
            return BRIDGE
        return None if values.get("TYPE", "Ethernet") == "Ethernet" else "other"

    def source_interfaces(self) -> list[SourceInterface]:
        return [SourceInterface(name, _norm_mac(values.get("HWADDR")), file)
                for file, name, values in self._configs() if self._kind(values) is None]

    def virtual_interfaces(self) -> list[VirtualInterface]:
        configs = self._configs()
        found = []
        for file, name, values in configs:
            kind = self._kind(values)
            if kind not in (BOND, VLAN, BRIDGE):
                continue
            addressing = values.get("BOOTPROTO", "none") + "".join(
                f" {values[k]}" for k in ("IPADDR", "PREFIX", "NETMASK") if k in values)
            if kind == VLAN:
                parent = values.get("PHYSDEV") or name.rsplit(".", 1)[0]
                vid = values.get("VLAN_ID") or name.rsplit(".", 1)[-1]
                found.append(VirtualInterface(VLAN, name, file, [parent],
                                              int(vid) if vid.isdigit() else None, addressing))
                continue
            key = "MASTER" if kind == BOND else "BRIDGE"
            members = [n for _, n, v in configs if v.get(key) == name]
            found.append(VirtualInterface(kind, name, file, members, addressing=addressing,
                                          options=values.get("BONDING_OPTS")))
        return found

    def _disabled_name(self, path: str) -> str:
        folder, base = path.rsplit("/", 1)
        return f"{folder}/coriolis-disabled.{base}"  # no longer ifcfg-*: not read

    def _text(self, name: str, mac: str | None) -> str:
        lines = [f"DEVICE={name}", f"NAME={name}", "TYPE=Ethernet", "BOOTPROTO=dhcp",
                 "ONBOOT=yes", "IPV6INIT=yes", "NM_CONTROLLED=yes"]
        return "\n".join(lines + ([f"HWADDR={mac}"] if mac else [])) + "\n"

    def _write(self, name: str, text: str, what: str) -> None:
        path = f"{self.DIR}/ifcfg-{name}"
        self.guest.mkdir_p(self.DIR)
        self.guest.write_text(path, text)
        self.log(f"network: {path}: {what}")

    def configure(self, name: str | None, mac: str | None) -> None:
        self._write(str(name), self._text(str(name), mac), f"{name} configured with DHCP")

    def configure_bond(self, bond: VirtualInterface, members: list[tuple[str, str | None]]) \
            -> None:
        for name, mac in members:
            self._write(name, "\n".join([f"DEVICE={name}", f"NAME={name}", "TYPE=Ethernet",
                                         "ONBOOT=yes", f"MASTER={bond.name}", "SLAVE=yes",
                                         "NM_CONTROLLED=yes",
                                         *([f"HWADDR={mac}"] if mac else [])]) + "\n",
                        f"{name} is a port of bond {bond.name}")
        options = [f'BONDING_OPTS="{bond.options}"'] if bond.options else []
        self._write(bond.name, "\n".join([f"DEVICE={bond.name}", f"NAME={bond.name}",
                                          "TYPE=Bond", "BONDING_MASTER=yes", *options,
                                          "BOOTPROTO=dhcp", "ONBOOT=yes", "IPV6INIT=yes",
                                          "NM_CONTROLLED=yes"]) + "\n",
                    f"bond {bond.name} configured with DHCP")

    def configure_vlan(self, vlan: VirtualInterface) -> None:
        self._write(vlan.name, "\n".join([f"DEVICE={vlan.name}", f"NAME={vlan.name}",
                                          "VLAN=yes", "TYPE=Vlan", f"PHYSDEV={vlan.members[0]}",
                                          f"VLAN_ID={vlan.vlan_id}", "BOOTPROTO=dhcp",
                                          "ONBOOT=yes", "NM_CONTROLLED=yes"]) + "\n",
                    f"VLAN {vlan.name} configured with DHCP")


class Wicked(Ifcfg):
    """SUSE's /etc/sysconfig/network/ifcfg-NAME (quoted values; the name is the file's).
    Bonds (``BONDING_MASTER``), VLANs (``ETHERDEVICE``) and bridges (``BRIDGE``) are found
    and dropped, each said in an event: not rebuilt for wicked."""

    name = "wicked"
    DIR = "/etc/sysconfig/network"
    rebuilds_virtual = False

    def _kind(self, values: dict[str, str]) -> str | None:
        if values.get("BONDING_MASTER") == "yes":
            return BOND
        if values.get("ETHERDEVICE"):
            return VLAN
        if values.get("BRIDGE") == "yes":
            return BRIDGE
        return None

    def virtual_interfaces(self) -> list[VirtualInterface]:
        found = []
        for file, name, values in self._configs():
            kind = self._kind(values)
            addressing = values.get("BOOTPROTO", "") + (f" {values['IPADDR']}"
                                                       if "IPADDR" in values else "")
            if kind == BOND:
                members = [v for k, v in sorted(values.items()) if k.startswith("BONDING_SLAVE")]
            elif kind == BRIDGE:
                members = values.get("BRIDGE_PORTS", "").split()
            elif kind == VLAN:
                members = [values["ETHERDEVICE"]]
            else:
                continue
            vid = values.get("VLAN_ID")
            found.append(VirtualInterface(kind, name, file, members,
                                          int(vid) if vid and vid.isdigit() else None,
                                          addressing.strip()))
        return found

    def _text(self, name: str, mac: str | None) -> str:
        # The name comes from the .link file; LLADDR would set the MAC, not match it.
        return "BOOTPROTO='dhcp'\nSTARTMODE='auto'\nNAME=''\n"


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
        by_mac.get(_norm_mac(source_macs[i] if i < len(source_macs) else None) or "")
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
        mac = _norm_mac(nic.mac)
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
