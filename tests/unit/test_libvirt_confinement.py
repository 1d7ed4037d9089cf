"""Which libvirt endpoints a project may use (``LibvirtEndpoint.check_location``): this
server's own hosts' daemon only where the server allows it, and a scratch folder only in the
default place or the project's local roots."""

from __future__ import annotations

from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.config import Settings
from coriolis.providers.libvirt.provider import LibvirtProvider


def test_this_hosts_daemon_is_refused_unless_the_server_allows_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORIOLIS_LIBVIRT_ALLOW_LOCAL", raising=False)
    provider = LibvirtProvider()
    for uri in ("qemu:///system", "qemu+unix:///system", "qemu:///session"):
        with pytest.raises(exceptions.LocationNotAllowed, match="connection_info.uri"):
            provider.check_location({"uri": uri}, "p1", Settings(data_dir=tmp_path))
    provider.check_location({"uri": "qemu:///system"}, "p1",
                            Settings(data_dir=tmp_path, libvirt_allow_local=True))
    # A remote host is reached with the endpoint's own credentials.
    provider.check_location({"uri": "qemu+ssh://root@10.0.0.5/system",
                             "ssh_private_key": "k"}, "p1", Settings(data_dir=tmp_path))


def test_allowed_by_the_environment_and_the_configuration_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORIOLIS_LIBVIRT_ALLOW_LOCAL", "1")
    assert Settings(data_dir=tmp_path / "a").libvirt_allow_local
    monkeypatch.delenv("CORIOLIS_LIBVIRT_ALLOW_LOCAL")
    conf = tmp_path / "coriolis.conf"
    conf.write_text("[libvirt]\nallow_local = true\n")
    assert Settings(data_dir=tmp_path / "b", config_file=conf).libvirt_allow_local
    conf.write_text("[libvirt]\nallow_local = no\n")
    assert not Settings(data_dir=tmp_path / "c", config_file=conf).libvirt_allow_local


def test_scratch_dir_stays_in_the_default_or_the_projects_roots(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, libvirt_allow_local=True)
    provider = LibvirtProvider()
    root = settings.local_roots_for("p1")[0]
    for ok in (str(root / "scratch"), "/var/lib/libvirt/coriolis/x"):
        provider.check_location({"uri": "qemu:///system", "scratch_dir": ok}, "p1", settings)
    (root / "escape").symlink_to("/etc")
    for bad in ("/etc", "relative/dir", str(root / "escape" / "x"),
                str(settings.local_roots_for("p2")[0])):
        with pytest.raises(exceptions.LocationNotAllowed, match="connection_info.scratch_dir"):
            provider.check_location({"uri": "qemu:///system", "scratch_dir": bad}, "p1",
                                    settings)


def test_a_uri_it_does_not_open_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(exceptions.InvalidInput, match="connection_info.uri"):
        LibvirtProvider().check_location({"uri": "xen:///system"}, "p1",
                                         Settings(data_dir=tmp_path))
