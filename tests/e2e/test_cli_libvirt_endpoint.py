"""libvirt endpoints through the real CLI and server: create, validate (the hypervisor and
version in the answer), networks, storage and destination options of the machine's libvirtd;
an unreachable URI and a wrong ssh key answer invalid naming the URI, with no secret in the
CLI's output or the server's log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer
from tests.libvirt_host import LibvirtHost, ensure_libvirtd
from tests.libvirt_transports import Sshd, start_sshd

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LibvirtHost]:
    ensure_libvirtd()
    made = LibvirtHost(tmp_path_factory.mktemp("libvirt"))
    try:
        made.add_pool("bulk")
        made.add_network("lan")
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    running = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield running
    finally:
        running.stop()


def create(server: RunningServer, name: str, info: dict[str, object], tmp: Path,
           *extra: str) -> str:
    """``endpoint create`` with the connection info in a file (keys stay out of argv)."""
    conn_file = tmp / f"{name}.json"
    conn_file.write_text(json.dumps(info))
    return str(server.cli("endpoint", "create", "--name", name, "--provider", "libvirt",
                          "--connection-file", str(conn_file), *extra, "-f", "value", "-c",
                          "id").stdout.strip())


def test_local_endpoint_validates_and_lists(server: RunningServer, host: LibvirtHost,
                                            tmp_path: Path) -> None:
    create(server, "kvm", {"uri": "qemu:///system"}, tmp_path)  # create validates it
    out = server.cli("endpoint", "validate", "connection", "kvm").stdout
    assert out.startswith("QEMU ") and " on libvirt " in out and "at qemu:///system" in out

    nets = server.cli("endpoint", "network", "list", "kvm", "-f", "json").json()
    assert host.name("lan") in {n["Name"] for n in nets}
    storage = server.cli("endpoint", "storage", "list", "kvm", "-f", "json").json()
    assert host.name("bulk") in {s["Name"] for s in storage}


def test_local_endpoint_destination_options(server: RunningServer, host: LibvirtHost,
                                            tmp_path: Path) -> None:
    """Needs the destination side (destination.py, another part of the provider)."""
    create(server, "kvm-options", {"uri": "qemu:///system"}, tmp_path)
    options = server.cli("endpoint", "destination", "options", "list", "kvm-options",
                         "-f", "json").json()
    assert isinstance(options, list) and options
    assert host.name("bulk") in json.dumps(options)


def test_unreachable_uri_is_invalid_naming_it(server: RunningServer, tmp_path: Path) -> None:
    uri = "qemu+tcp://127.0.0.1:1/system"
    create(server, "closed", {"uri": uri}, tmp_path, "--skip-validation")
    result = server.cli("endpoint", "validate", "connection", "closed", check=False)
    assert result.returncode != 0
    assert f"cannot connect to libvirt at {uri}" in result.stderr
    assert "Connection refused" in result.stderr


def test_wrong_ssh_key_is_invalid_without_secrets(server: RunningServer, sshd: Sshd,
                                                  tmp_path: Path) -> None:
    shown = f"qemu+ssh://root@127.0.0.1:{sshd.port}/system"
    create(server, "wrong-key", {"uri": shown + "?mode=auto",
                                 "ssh_private_key": sshd.other_key},
           tmp_path, "--skip-validation")
    result = server.cli("endpoint", "validate", "connection", "wrong-key", check=False)
    assert result.returncode != 0
    assert f"cannot connect to libvirt at {shown}" in result.stderr
    assert "Permission denied (publickey)" in result.stderr
    create_result = server.cli("endpoint", "create", "--name", "wrong-key-2", "--provider",
                               "libvirt", "--connection",
                               json.dumps({"uri": shown, "ssh_private_key": "x" * 40}),
                               check=False)
    assert create_result.returncode != 0 and shown in create_result.stderr
    password = f"qemu+ssh://root:pass-in-uri@127.0.0.1:{sshd.port}/system"
    # Refused when stored (the server checks where an endpoint leads before keeping it).
    (tmp_path / "password.json").write_text(json.dumps({"uri": password,
                                                        "ssh_private_key": sshd.client_key}))
    password_result = server.cli("endpoint", "create", "--name", "password", "--provider",
                                 "libvirt", "--connection-file",
                                 str(tmp_path / "password.json"), "--skip-validation",
                                 check=False)
    assert password_result.returncode != 0
    assert "connection_info.uri: holds a password" in password_result.stderr
    assert "HTTP 400" in password_result.stderr
    secrets = ["pass-in-uri", "x" * 40, *sshd.other_key.splitlines()[1:-1]]
    texts = {"validate output": result.stdout + result.stderr,
             "create output": create_result.stdout + create_result.stderr,
             "password output": password_result.stdout + password_result.stderr,
             "server log": server.log_path.read_text()}
    for what, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{what} holds a secret"

    good = create(server, "good-key", {"uri": shown, "ssh_private_key": sshd.client_key,
                                       "ssh_known_hosts": sshd.known_hosts}, tmp_path)
    out = server.cli("endpoint", "validate", "connection", good).stdout
    assert f"at {shown}" in out
