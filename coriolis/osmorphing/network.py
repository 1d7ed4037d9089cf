"""Network configuration for the destination NICs, in whichever tool the guest uses.

Every destination NIC gets DHCP. Its interface keeps the name the guest gave the matching
source NIC (found by the source MAC where the guest's configuration records it, else by
order), pinned to the destination MAC with a systemd ``.link`` file, so that whatever else in
the guest names the interface still works. Configuration of the source interfaces is disabled
(kept beside, renamed), never deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from coriolis.osmorphing.guest import EventLog, Guest
from coriolis.osmorphing.profile import DestinationNic

DISABLED = ".coriolis-disabled"
LINK_DIR = "/etc/systemd/network"
PERSISTENT_NET_RULES = "/etc/udev/rules.d/70-persistent-net.rules"


@dataclass
class SourceInterface:
    name: str
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

    def __init__(self, guest: Guest, log: EventLog) -> None:
        self.guest = guest
        self.log = log

    def in_use(self) -> bool:
        return bool(self.source_interfaces())

    def source_interfaces(self) -> list[SourceInterface]:
        raise NotImplementedError

    def disable_sources(self, interfaces: list[SourceInterface]) -> None:
        for file in sorted({i.file for i in interfaces}):
            self._disable_file(file)

    def configure(self, name: str, mac: str | None) -> None:
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


class Ifupdown(NetworkTool):
    """Debian's /etc/network/interfaces (and interfaces.d/): stanzas of source interfaces
    are commented out in place, one ``auto NAME / iface NAME inet dhcp`` stanza per NIC."""

    name = "ifupdown"
    MAIN = "/etc/network/interfaces"
    _TOP = ("iface", "auto", "allow-", "mapping", "source", "rename")

    def _all_files(self) -> list[str]:
        files = [self.MAIN] if self.guest.exists(self.MAIN) else []
        return files + self._files("/etc/network/interfaces.d", r"[A-Za-z0-9_-]+")

    def source_interfaces(self) -> list[SourceInterface]:
        found: list[SourceInterface] = []
        for file in self._all_files():
            for line in self.guest.read_text(file).splitlines():
                words = line.split()
                if len(words) >= 2 and words[0] == "iface" and words[1] != "lo" \
                        and words[1] not in [i.name for i in found]:
                    found.append(SourceInterface(words[1], None, file))
        return found

    def disable_sources(self, interfaces: list[SourceInterface]) -> None:
        names = {i.name for i in interfaces}
        for file in sorted({i.file for i in interfaces}):
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

    def configure(self, name: str, mac: str | None) -> None:
        text = self.guest.read_text(self.MAIN) if self.guest.exists(self.MAIN) else ""
        text = text.rstrip("\n") + f"\n\n# Added by Coriolis OS morphing\nauto {name}\n" \
                                   f"iface {name} inet dhcp\n"
        self.guest.write_text(self.MAIN, text)
        self.log(f"network: {self.MAIN}: {name} configured with DHCP")


class Netplan(NetworkTool):
    name = "netplan"
    DIR = "/etc/netplan"
    OUT = "/etc/netplan/50-coriolis.yaml"

    def source_interfaces(self) -> list[SourceInterface]:
        found = []
        for file in self._files(self.DIR, r".+\.ya?ml"):
            if file == self.OUT:
                continue
            try:
                doc = yaml.safe_load(self.guest.read_text(file)) or {}
            except yaml.YAMLError:
                continue
            ethernets = ((doc.get("network") or {}).get("ethernets") or {}) \
                if isinstance(doc, dict) else {}
            for key, conf in ethernets.items():
                conf = conf or {}
                mac = (conf.get("match") or {}).get("macaddress")
                found.append(SourceInterface(conf.get("set-name") or key, _norm_mac(mac), file))
        return found

    def configure(self, name: str, mac: str | None) -> None:
        doc: dict = {"network": {"version": 2, "ethernets": {}}}
        if self.guest.exists(self.OUT):
            doc = yaml.safe_load(self.guest.read_text(self.OUT)) or doc
        entry: dict = {"dhcp4": True}
        if mac:
            entry = {"match": {"macaddress": mac}, "set-name": name, "dhcp4": True}
        doc["network"]["ethernets"][name] = entry
        self.guest.write_text(self.OUT, yaml.safe_dump(doc, sort_keys=False))
        self.guest.run(f"chmod 600 {self.OUT}")
        self.log(f"network: {self.OUT}: {name} configured with DHCP")


class NetworkManagerKeyfile(NetworkTool):
    name = "NetworkManager"
    DIR = "/etc/NetworkManager/system-connections"

    def source_interfaces(self) -> list[SourceInterface]:
        found = []
        for file in self._files(self.DIR, r".+\.nmconnection|[^.]+"):
            text = self.guest.read_text(file)
            if not re.search(r"^type=(ethernet|802-3-ethernet)\s*$", text, re.M):
                continue
            name = re.search(r"^interface-name=(\S+)", text, re.M)
            mac = re.search(r"^mac-address=(\S+)", text, re.M)
            found.append(SourceInterface(name.group(1) if name else "", _norm_mac(
                mac.group(1) if mac else None), file))
        return found

    def _disabled_name(self, path: str) -> str:
        # NetworkManager reads every file of its folder whatever its name: move them out.
        folder = self.DIR + DISABLED
        self.guest.mkdir_p(folder)
        return f"{folder}/{path.rsplit('/', 1)[1]}"

    def configure(self, name: str, mac: str | None) -> None:
        path = f"{self.DIR}/coriolis-{name}.nmconnection"
        lines = ["[connection]", f"id={name}", "type=ethernet", f"interface-name={name}", ""]
        if mac:
            lines += ["[ethernet]", f"mac-address={mac}", ""]
        lines += ["[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
        self.guest.mkdir_p(self.DIR)
        self.guest.write_text(path, "\n".join(lines))
        self.guest.run(f"chmod 600 '{path}'")  # NetworkManager ignores keyfiles others can read
        self.log(f"network: {path}: {name} configured with DHCP")


class Ifcfg(NetworkTool):
    """RHEL-family /etc/sysconfig/network-scripts/ifcfg-NAME (initscripts and NetworkManager's
    ifcfg-rh plugin)."""

    name = "ifcfg"
    DIR = "/etc/sysconfig/network-scripts"

    def source_interfaces(self) -> list[SourceInterface]:
        found = []
        for file in self._files(self.DIR, r"ifcfg-(?!lo$).+"):
            values = _kv_file(self.guest.read_text(file))
            if values.get("TYPE", "Ethernet") != "Ethernet":
                continue
            name = values.get("DEVICE") or file.rsplit("ifcfg-", 1)[1]
            found.append(SourceInterface(name, _norm_mac(values.get("HWADDR")), file))
        return found

    def _disabled_name(self, path: str) -> str:
        folder, base = path.rsplit("/", 1)
        return f"{folder}/coriolis-disabled.{base}"  # no longer ifcfg-*: not read

    def _text(self, name: str, mac: str | None) -> str:
        lines = [f"DEVICE={name}", f"NAME={name}", "TYPE=Ethernet", "BOOTPROTO=dhcp",
                 "ONBOOT=yes", "IPV6INIT=yes", "NM_CONTROLLED=yes"]
        return "\n".join(lines + ([f"HWADDR={mac}"] if mac else [])) + "\n"

    def configure(self, name: str, mac: str | None) -> None:
        path = f"{self.DIR}/ifcfg-{name}"
        self.guest.mkdir_p(self.DIR)
        self.guest.write_text(path, self._text(name, mac))
        self.log(f"network: {path}: {name} configured with DHCP")


class Wicked(Ifcfg):
    """SUSE's /etc/sysconfig/network/ifcfg-NAME (quoted values; the name is the file's)."""

    name = "wicked"
    DIR = "/etc/sysconfig/network"

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
                      source_macs: list[str | None], tool: NetworkTool) -> list[str]:
    """Disable the source interfaces' configuration and configure every destination NIC with
    DHCP; returns the interface names given to the destination NICs."""
    sources = tool.source_interfaces()
    by_mac = {**_persistent_net_names(guest),
              **{s.mac: s.name for s in sources if s.mac and s.name}}
    by_order = [s.name for s in sources if s.name]
    names: list[str] = []
    for i in range(len(nics)):
        source_mac = _norm_mac(source_macs[i] if i < len(source_macs) else None)
        name = (by_mac.get(source_mac or "") or (by_order[i] if i < len(by_order) else None)
                or f"eth{i}")
        if name in names:
            name = f"eth{i}"
        names.append(name)
    if sources:
        tool.disable_sources(sources)
    if guest.exists(PERSISTENT_NET_RULES):
        guest.rename(PERSISTENT_NET_RULES, PERSISTENT_NET_RULES + DISABLED)
        log(f"network: {PERSISTENT_NET_RULES} (source MACs) kept as "
            f"{PERSISTENT_NET_RULES}{DISABLED}")
    for nic, name in zip(nics, names, strict=True):
        mac = _norm_mac(nic.mac)
        if mac:
            guest.mkdir_p(LINK_DIR)
            link = f"{LINK_DIR}/10-coriolis-{name}.link"
            guest.write_text(link, f"[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n")
            log(f"network: {link}: the NIC with MAC {mac} is named {name}")
        else:
            log(f"network: the destination does not say the MAC of NIC {name}; its name is "
                "left to the guest")
        tool.configure(name, mac)
    return names
