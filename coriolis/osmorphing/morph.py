"""Choose the morpher for an inspected guest, run it, then the user's scripts."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from coriolis.osmorphing.base import LinuxMorpher
from coriolis.osmorphing.debian import DebianMorpher
from coriolis.osmorphing.guest import EventLog, Guest, MorphingFailed, OsInfo
from coriolis.osmorphing.profile import DestinationProfile
from coriolis.osmorphing.redhat import RedHatMorpher
from coriolis.osmorphing.suse import SuseMorpher
from coriolis.osmorphing.windows.morpher import WindowsMorpher

MORPHERS: dict[str, type[LinuxMorpher]] = {
    "debian": DebianMorpher, "ubuntu": DebianMorpher, "linuxmint": DebianMorpher,
    "rhel": RedHatMorpher, "centos": RedHatMorpher, "rocky": RedHatMorpher,
    "almalinux": RedHatMorpher, "oraclelinux": RedHatMorpher, "fedora": RedHatMorpher,
    "redhat-based": RedHatMorpher, "scientificlinux": RedHatMorpher,
    "sles": SuseMorpher, "opensuse": SuseMorpher, "suse-based": SuseMorpher,
}

USER_SCRIPT_PATH = "/root/.coriolis-user-script"


def morpher_for(os_info: OsInfo) -> type[LinuxMorpher]:
    if os_info.type != "linux":
        raise MorphingFailed(f"{os_info.product}: guests of type '{os_info.type}' are not "
                             "supported by OS morphing (Linux and Windows only)")
    morpher = MORPHERS.get(os_info.distro)
    if morpher is None:
        raise MorphingFailed(
            f"unsupported distribution '{os_info.distro}' ({os_info.product}): OS morphing "
            f"supports {', '.join(sorted(set(MORPHERS) - {'redhat-based', 'suse-based'}))}")
    return morpher


def user_scripts_for(scripts: dict[str, Any], instance: str,
                     os_type: str) -> list[tuple[str, str]]:
    """The (name, text) scripts to run in ``instance``: from the task_info's ``user_scripts``
    value, its own script, else the global one of its OS type (as upstream)."""
    own = (scripts.get("instances") or {}).get(instance)
    if own:
        return [(f"instance {instance}", own)]
    common = (scripts.get("global") or {}).get(os_type)
    return [(f"global {os_type}", common)] if common else []


def run_user_script(guest: Guest, log: EventLog, name: str, script: str) -> None:
    """Run a user script inside the guest (it may start with its own #! line); every line of
    its output becomes an event."""
    guest.write_text(USER_SCRIPT_PATH, script if script.startswith("#!")
                     else "#!/bin/sh\n" + script)
    try:
        output = guest.run(f"chmod 700 {USER_SCRIPT_PATH} && "
                           f"{shlex.quote(USER_SCRIPT_PATH)} 2>&1")
    except MorphingFailed as exc:
        raise MorphingFailed(f"user script ({name}) failed: {exc}") from None
    finally:
        guest.remove(USER_SCRIPT_PATH)
    lines = output.splitlines() or ["(no output)"]
    for line in lines:
        log(f"user script ({name}): {line}")


def morph_guest(guest: Guest, profile: DestinationProfile, log: EventLog, *,
                source_macs: list[str | None] | None = None,
                user_scripts: Sequence[tuple[str, str]] = ()) -> None:
    """Morph an opened, mounted guest; ``user_scripts`` are (name, text) pairs run after the
    built-in steps, in order."""
    log(f"found {guest.os.describe()}")
    if guest.os.type == "windows":  # user scripts become first-boot actions
        WindowsMorpher(guest, profile, log, source_macs, user_scripts).morph()
        return
    morpher_for(guest.os)(guest, profile, log, source_macs).morph()
    for name, script in user_scripts:
        run_user_script(guest, log, name, script)
