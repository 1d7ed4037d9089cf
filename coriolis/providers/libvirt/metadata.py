"""The coriolis metadata element in a domain's XML, shared by the source and destination
sides: ``<metadata><coriolis:transfer xmlns:coriolis="NAMESPACE" pending="yes" id="..."/>``
marks a domain the destination is still deploying (the source side does not list it)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

NAMESPACE = "https://coriolis.example/libvirt/1"
PREFIX = "coriolis"
ELEMENT = "transfer"
TAG = f"{{{NAMESPACE}}}{ELEMENT}"


def transfer_element(transfer_id: str, pending: bool = True) -> str:
    """The metadata XML for ``virDomain.setMetadata``/a domain definition (no secret)."""
    value = ET.Element(f"{PREFIX}:{ELEMENT}", {f"xmlns:{PREFIX}": NAMESPACE,
                                              "pending": "yes" if pending else "no",
                                              "id": transfer_id})
    return ET.tostring(value, encoding="unicode")


def is_pending(domain: ET.Element) -> bool:
    """Whether a parsed ``<domain>`` carries the pending coriolis transfer metadata."""
    found = domain.find(f"./metadata/{TAG}")
    return found is not None and found.get("pending") == "yes"
