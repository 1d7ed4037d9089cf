"""NetworkManager keyfiles, RHEL-family ifcfg files and SUSE's wicked ifcfg files, as
``network.configure_network`` uses them."""

from __future__ import annotations

from coriolis.osmorphing.bonds import BOND, BRIDGE, VLAN, VirtualInterface
from coriolis.osmorphing.nettool import (
    DISABLED,
    NetworkTool,
    SourceInterface,
    kv_file,
    norm_mac,
)


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
            found.append(SourceInterface(conn.get("interface-name") or None, norm_mac(mac),
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
            values = kv_file(self.guest.read_text(file))
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
        return [SourceInterface(name, norm_mac(values.get("HWADDR")), file)
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
