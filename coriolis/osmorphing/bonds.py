"""Bonds, VLANs and bridges of the source network configuration: which are rebuilt over the
destination NICs, and which are dropped (each said in an event).

The destination NICs keep the names of the source NICs (``network.configure_network``), so a
bond's members and a VLAN's parent keep their names too. A bond is rebuilt when at least one of
its members has a destination NIC, with its mode and options as they were and DHCP instead of
its source addresses (as every interface gets: the destination network is another one); its
members get no addresses of their own. A VLAN is rebuilt, with DHCP, on a parent that is kept
when the destination's networks carry 802.1Q-tagged frames (the profile's ``tagged_vlans``);
otherwise it is dropped. Bridges are dropped (their ports get DHCP as plain NICs). A tool that
cannot rebuild them (``NetworkTool.rebuilds_virtual``) drops them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BOND, VLAN, BRIDGE = "bond", "vlan", "bridge"


@dataclass
class VirtualInterface:
    kind: str  # bond | vlan | bridge
    name: str
    file: str
    members: list[str] = field(default_factory=list)  # bond/bridge: ports; vlan: [parent]
    vlan_id: int | None = None
    addressing: str = ""  # the source's, as the tool wrote it (for events)
    options: Any = None  # the tool's own bond options, written back as they were

    def describe(self) -> str:
        what = {BOND: f"bond over {', '.join(self.members) or 'no member'}",
                VLAN: f"VLAN {self.vlan_id} on {''.join(self.members)}",
                BRIDGE: f"bridge over {', '.join(self.members) or 'no port'}"}[self.kind]
        return f"{self.name} ({what}; {self.addressing or 'no addresses'}; {self.file})"


@dataclass
class Plan:
    bonds: list[tuple[VirtualInterface, list[str]]]  # kept bonds and their members here
    vlans: list[VirtualInterface]  # kept VLANs

    def bond_of(self, nic: str) -> str | None:
        return next((b.name for b, members in self.bonds if nic in members), None)


def plan(virtuals: list[VirtualInterface], nic_names: list[str | None], *, can_rebuild: bool,
         tagged_vlans: bool, log: Callable[[str], None]) -> Plan:
    """Decide what is kept; every decision is an event naming the interface, what it was in
    the source and why it was dropped or how it is rebuilt."""
    kept = Plan([], [])
    here = {n for n in nic_names if n}
    for v in (v for v in virtuals if v.kind == BOND):
        members = [m for m in v.members if m in here]
        if not can_rebuild or not members:
            why = "this guest's network tool is not rebuilt with bonds by OS morphing" \
                if can_rebuild is False else "none of its members has a destination NIC"
            log(f"network: dropped bond {v.describe()}: {why}")
            continue
        kept.bonds.append((v, members))
        gone = [m for m in v.members if m not in members]
        log(f"network: bond {v.describe()} rebuilt over {', '.join(members)} with its options "
            f"and DHCP" + (f"; members without a destination NIC left out: {', '.join(gone)}"
                           if gone else ""))
    parents = here | {b.name for b, _ in kept.bonds}
    for v in (v for v in virtuals if v.kind == VLAN):
        if not can_rebuild:
            why = "this guest's network tool is not rebuilt with VLANs by OS morphing"
        elif not v.members or v.members[0] not in parents:
            why = "its parent interface is not kept on the destination"
        elif not tagged_vlans:
            why = ("the destination's networks are not said to carry tagged frames "
                   "(profile tagged_vlans)")
        else:
            kept.vlans.append(v)
            log(f"network: VLAN {v.describe()} rebuilt with DHCP")
            continue
        log(f"network: dropped VLAN {v.describe()}: {why}")
    for v in (v for v in virtuals if v.kind == BRIDGE):
        log(f"network: dropped bridge {v.describe()}: OS morphing does not rebuild bridges; "
            "its ports get DHCP as plain NICs")
    return kept
