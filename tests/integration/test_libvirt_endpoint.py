"""The libvirt provider's endpoint side on the machine's real libvirtd: connection URIs and
their credentials (qemu:///system; qemu+ssh through an sshd of the test's own; qemu+tls to an
unprivileged second libvirtd listening on TLS), validation messages, networks and storage."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis.providers.libvirt import connection
from coriolis.providers.libvirt.connection import connect, display_uri, open_uri
from coriolis.providers.libvirt.endpoint import LibvirtEndpoint
from tests.libvirt_host import URI, LibvirtHost, ensure_libvirtd
from tests.libvirt_transports import Sshd, TlsLibvirtd, start_sshd, start_tls_libvirtd

VERSION = re.compile(r"^QEMU \d+\.\d+\.\d+ on libvirt \d+\.\d+\.\d+ at (\S+) \(host \S+\)$")
endpoint = LibvirtEndpoint()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    ensure_libvirtd()
    running = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def tls_daemon() -> Iterator[TlsLibvirtd]:
    running = start_tls_libvirtd()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temp folder ``connect`` makes its private folder in (to see it is removed)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def failure(connection_info: dict[str, object]) -> str:
    with pytest.raises(exceptions.ConnectionValidationFailed) as err:
        endpoint.validate_connection(connection_info)
    return str(err.value)


# --- URIs and connection infos (no daemon needed) ------------------------------------------

@pytest.mark.parametrize("info, field, words", [
    ({"uri": "xen:///system"}, "connection_info.uri", "qemu URIs"),
    ({"uri": "vbox+ssh://h/session"}, "connection_info.uri", "qemu URIs"),
    ({"uri": "qemu+ext:///system?command=/bin/sh"}, "connection_info.uri", "transport 'ext'"),
    ({"uri": "qemu:///system?keyfile=/root/.ssh/id_rsa"}, "connection_info.uri", "keyfile"),
    ({"uri": "qemu+ssh://h/system?socket=/run/x"}, "connection_info.uri", "socket"),
    ({"uri": "qemu:///embed?root=/x"}, "connection_info.uri", "/system or /session"),
    ({"uri": "qemu+ssh://root@h/system"}, "connection_info.ssh_private_key", "private key"),
    ({"uri": "qemu+tls://h/system"}, "connection_info.tls", "ca_cert"),
    ({"uri": "qemu+tls://h/system", "tls": {"ca_cert": "x", "client_cert": "",
                                            "client_key": "k"}},
     "connection_info.tls.client_cert", "PEM"),
    ({"uri": "qemu:///system", "ssh_private_key": "k"}, "connection_info.ssh_private_key",
     "qemu+ssh"),
    ({"uri": "qemu+ssh:///system", "ssh_private_key": "k"}, "connection_info.uri", "host"),
    ({"uri": "qemu+ssh://root:pw-secret@h/system", "ssh_private_key": "k"},
     "connection_info.uri", "password"),
])
def test_bad_connection_info_is_invalid_input_naming_the_field(
        info: dict[str, object], field: str, words: str, private_tmp: Path) -> None:
    with pytest.raises(exceptions.InvalidInput) as err:
        endpoint.validate_connection(info)
    assert field in str(err.value) and words in str(err.value)
    assert "k" not in str(err.value).split() and "pw-secret" not in str(err.value)
    assert not list(private_tmp.iterdir())


def test_display_uri_has_no_password_nor_query() -> None:
    info = {"uri": "qemu+ssh://admin:hunter2@kvm1.example:2222/system?mode=direct&x=hunter2"}
    assert display_uri(info) == "qemu+ssh://admin@kvm1.example:2222/system"
    assert display_uri({"uri": "qemu:///system"}) == "qemu:///system"


def test_ssh_files_are_private_and_the_uri_names_them(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    key = ("-----BEGIN OPENSSH PRIVATE KEY-----\nsecretsecretsecret\n"
           "-----END OPENSSH PRIVATE KEY-----")
    uri, secrets = open_uri({"uri": "qemu+ssh://root@h:2222/system?mode=direct&no_verify=1",
                             "ssh_private_key": key,
                             "ssh_known_hosts": "[h]:2222 ssh-ed25519 AAAA"}, folder)
    assert uri.startswith("qemu+ssh://root@h:2222/system?")
    params = dict(p.split("=", 1) for p in uri.split("?", 1)[1].split("&"))
    assert params["mode"] == "direct" and params["no_tty"] == "1" and "no_verify" not in params
    keyfile = Path(params["keyfile"].replace("%2F", "/"))
    assert keyfile.read_text().strip() == key and stat.S_IMODE(keyfile.stat().st_mode) == 0o600
    wrapper = Path(params["command"].replace("%2F", "/")).read_text()
    assert "StrictHostKeyChecking=yes" in wrapper and "IdentitiesOnly=yes" in wrapper
    assert (folder / "known_hosts").read_text() == "[h]:2222 ssh-ed25519 AAAA\n"
    assert key.strip() in secrets


def test_tls_files_are_written_for_pkipath(tmp_path: Path) -> None:
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    tls = {"ca_cert": "CA", "client_cert": "CERT", "client_key": "KEY-SECRET"}
    uri, secrets = open_uri({"uri": "qemu+tls://kvm1/system", "tls": tls}, folder)
    assert uri == f"qemu+tls://kvm1/system?pkipath={str(folder).replace('/', '%2F')}"
    for name, value in (("cacert.pem", "CA"), ("clientcert.pem", "CERT"),
                        ("clientkey.pem", "KEY-SECRET")):
        assert (folder / name).read_text() == value + "\n"
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert secrets == ["KEY-SECRET"]


# --- the system daemon ---------------------------------------------------------------------

def test_validate_local_reports_the_hypervisor_and_version(private_tmp: Path) -> None:
    ensure_libvirtd()
    message = endpoint.validate_connection({"uri": URI})
    assert (m := VERSION.match(message)) and m.group(1) == "qemu:///system", message
    assert not list(private_tmp.iterdir())


def test_unreachable_uri_names_it() -> None:
    message = failure({"uri": "qemu+tcp://127.0.0.1:1/system"})
    assert message.startswith("cannot connect to libvirt at qemu+tcp://127.0.0.1:1/system: ")
    assert "Connection refused" in message


def test_networks_list_libvirt_networks_and_free_host_bridges(tmp_path: Path) -> None:
    host = LibvirtHost(tmp_path / "host")
    bridge = f"br{host.prefix[2:]}"
    subprocess.run(["ip", "link", "add", "name", bridge, "type", "bridge"], check=True)
    try:
        net = host.add_network("lan")
        inactive = host.conn.networkDefineXML(
            f"<network><name>{host.name('off')}</name><bridge name='vb{host.prefix[2:]}off' "
            "stp='off'/></network>")
        found = {n["name"]: n for n in endpoint.list_networks(host.connection_info(), {})}
        assert found[host.name("lan")] == {"id": host.name("lan"), "name": host.name("lan"),
                                           "bridge": net.bridgeName(), "active": True}
        assert found[host.name("off")]["active"] is False
        assert found[f"bridge:{bridge}"] == {"id": f"bridge:{bridge}",
                                             "name": f"bridge:{bridge}", "bridge": bridge,
                                             "active": True}
        # a libvirt network's own bridge is listed as the network only
        assert f"bridge:{net.bridgeName()}" not in found
        del inactive
    finally:
        subprocess.run(["ip", "link", "del", bridge], check=False)
        host.close()


def test_storage_lists_pools_with_sizes_and_the_default(tmp_path: Path) -> None:
    host = LibvirtHost(tmp_path / "host")
    made_default = None
    try:
        host.add_pool("bulk")
        idle = host.conn.storagePoolDefineXML(
            f"<pool type='dir'><name>{host.name('idle')}</name><target><path>"
            f"{tmp_path}</path></target></pool>", 0)
        del idle
        names = {p.name() for p in host.conn.listAllStoragePools(0)}
        if "default" not in names:  # made for this test only, then removed
            folder = tmp_path / "default-pool"
            folder.mkdir()
            made_default = host.conn.storagePoolDefineXML(
                f"<pool type='dir'><name>default</name><target><path>{folder}</path>"
                "</target></pool>", 0)
        storage = endpoint.list_storage(host.connection_info(), {})
        pools = {p["name"]: p for p in storage["storage_backends"]}
        bulk = pools[host.name("bulk")]
        props = bulk["additional_provider_properties"]
        assert bulk["id"] == host.name("bulk")
        assert props["type"] == "dir" and props["active"] is True
        assert props["path"] == str(tmp_path / "host" / "pools" / "bulk")
        st = os.statvfs(props["path"])
        assert props["capacity_bytes"] == st.f_blocks * st.f_frsize
        assert 0 < props["available_bytes"] <= props["capacity_bytes"]
        assert pools[host.name("idle")]["additional_provider_properties"]["capacity_bytes"] \
            is None
        assert storage["config_default"] == "default"
    finally:
        if made_default is not None:
            made_default.undefine()
        host.close()


# --- qemu+ssh --------------------------------------------------------------------------------

def test_ssh_with_known_hosts_validates(sshd: Sshd, private_tmp: Path) -> None:
    message = endpoint.validate_connection({"uri": sshd.uri(), "ssh_private_key": sshd.client_key,
                                            "ssh_known_hosts": sshd.known_hosts})
    assert (m := VERSION.match(message)) and m.group(1) == sshd.uri(), message
    assert not list(private_tmp.iterdir()), "the key's folder is left"


def test_ssh_without_known_hosts_validates_and_lists(sshd: Sshd) -> None:
    info = {"uri": sshd.uri(), "ssh_private_key": sshd.client_key}
    assert VERSION.match(endpoint.validate_connection(info))
    with connect(info) as conn:  # the connection stays usable after the key file is gone
        assert conn.getURI().startswith("qemu+ssh://root@127.0.0.1")
        assert isinstance(conn.listAllStoragePools(0), list)


def test_ssh_wrong_key_fails_naming_the_uri_without_the_key(sshd: Sshd,
                                                            private_tmp: Path) -> None:
    message = failure({"uri": sshd.uri(), "ssh_private_key": sshd.other_key})
    assert message.startswith(f"cannot connect to libvirt at {sshd.uri()}: ")
    assert "Permission denied (publickey)" in message
    for line in sshd.other_key.splitlines()[1:-1]:
        assert line not in message
    assert not list(private_tmp.iterdir()), "the key's folder is left"


def test_ssh_unknown_host_key_is_refused(sshd: Sshd) -> None:
    other_host = sshd.known_hosts.replace("127.0.0.1", "127.0.0.2")
    message = failure({"uri": sshd.uri(), "ssh_private_key": sshd.client_key,
                       "ssh_known_hosts": other_host})
    assert sshd.uri() in message and "Host key verification failed" in message


def test_ssh_garbage_key_and_closed_port(sshd: Sshd) -> None:
    secret = "not-a-key-but-a-secret-all-the-same"
    message = failure({"uri": sshd.uri(), "ssh_private_key": secret})
    assert sshd.uri() in message and secret not in message and "<private dir>" in message
    closed = "qemu+ssh://root@127.0.0.1:1/system"
    message = failure({"uri": closed, "ssh_private_key": sshd.client_key})
    assert message.startswith(f"cannot connect to libvirt at {closed}: ")
    assert "Connection refused" in message


def test_ssh_key_is_never_a_worker_file(sshd: Sshd, monkeypatch: pytest.MonkeyPatch,
                                        tmp_path: Path) -> None:
    """The wrapper gives ssh only the endpoint's key: a key of the worker's user (here an
    agent offering the good key) is not used."""
    agent = subprocess.run(["ssh-agent", "-s"], capture_output=True, text=True, check=True)
    env = dict(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", agent.stdout))
    try:
        key = tmp_path / "k"
        key.write_text(sshd.client_key)
        key.chmod(0o600)
        subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, **env}, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", env["SSH_AUTH_SOCK"])
        message = failure({"uri": sshd.uri(), "ssh_private_key": sshd.other_key})
        assert "Permission denied" in message
    finally:
        subprocess.run(["kill", env["SSH_AGENT_PID"]], check=False)


# --- qemu+tls --------------------------------------------------------------------------------

def test_tls_validates_and_lists(tls_daemon: TlsLibvirtd, private_tmp: Path) -> None:
    info = {"uri": tls_daemon.uri(), "tls": tls_daemon.tls()}
    message = endpoint.validate_connection(info)
    assert (m := VERSION.match(message)) and m.group(1) == tls_daemon.uri(), message
    assert endpoint.list_storage(info, {})["config_default"] is None
    assert not list(private_tmp.iterdir()), "the certificates' folder is left"


def test_tls_bad_certificates_fail_clearly(tls_daemon: TlsLibvirtd) -> None:
    good = tls_daemon.tls()
    not_a_ca = failure({"uri": tls_daemon.uri(), "tls": {**good, "ca_cert": good["client_cert"]}})
    assert tls_daemon.uri() in not_a_ca and "CA" in not_a_ca
    secret_key = ("-----BEGIN PRIVATE KEY-----\nTHISISNOTAKEYBUTASECRETANYWAY\n"
                  "-----END PRIVATE KEY-----")
    bad_key = failure({"uri": tls_daemon.uri(), "tls": {**good, "client_key": secret_key}})
    assert tls_daemon.uri() in bad_key and "THISISNOTAKEY" not in bad_key
    assert "clientkey.pem" in bad_key and "<private dir>" in bad_key
    wrong_name = f"qemu+tls://localhost:{tls_daemon.port}/session"
    message = failure({"uri": wrong_name, "tls": good})
    assert wrong_name in message and "certificate" in message
    for message in (not_a_ca, bad_key):
        assert good["client_key"].splitlines()[1] not in message


def test_private_folder_goes_when_the_connection_fails(private_tmp: Path,
                                                       tls_daemon: TlsLibvirtd) -> None:
    failure({"uri": "qemu+tls://127.0.0.1:1/system", "tls": tls_daemon.tls()})
    assert not list(private_tmp.iterdir())
    assert connection.SSH_CONNECT_TIMEOUT <= 30


def test_a_crashed_connections_private_folder_is_swept(private_tmp: Path) -> None:
    """A process killed while its connection opened left its key: the next connect removes
    it; a live process's folder stays."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = private_tmp / f"coriolis-libvirt-{dead.pid}-abc"
    left.mkdir()
    (left / "id_key").write_text("KEY")
    live = private_tmp / f"coriolis-libvirt-{os.getpid()}-xyz"
    live.mkdir()
    ensure_libvirtd()
    endpoint.validate_connection({"uri": URI})
    assert not left.exists() and live.exists()
