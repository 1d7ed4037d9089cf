"""openstack endpoints against a real Keystone (PyPI, SQLite, uWSGI on loopback): the
provider authenticates with a password or an application credential and checks the catalog;
wrong credentials and missing services are invalid naming the user, URL and services, never
the secret; through the real CLI and server, ``endpoint create`` validates and ``endpoint
validate connection`` answers the provider's message. The catalog entries of compute,
volumev3, network and image point at a closed loopback port: validation reads only the
catalog (the services themselves are exercised by tests/e2e/test_openstack_cloud.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis import exceptions
from coriolis import openstack_services as ops
from coriolis.config import Settings
from coriolis.harness import RunningServer
from coriolis.providers.openstack.provider import OpenStackProvider

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
PASSWORD = "os-prov-user-pw-5bd1"


@pytest.fixture(scope="module")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ops.Keystone]:
    ks = ops.start_keystone(tmp_path_factory.mktemp("ks"))
    try:
        ks.user("osprov", PASSWORD, "osprov-project", ("member",))
        yield ks
    finally:
        ks.stop()


def info(ks: ops.Keystone, **extra: object) -> dict[str, object]:
    return {"auth_url": ks.url, "username": "osprov", "password": PASSWORD,
            "project_name": "osprov-project", "user_domain_name": "Default",
            "project_domain_name": "Default", "region_name": "RegionOne",
            "interface": "public", **extra}


def _catalog_complete(ks: ops.Keystone) -> None:
    have = {s["type"] for s in ks.admin("GET", "/services")["services"]}
    port = ops.free_port()  # nothing listens there
    for stype, name in (("compute", "nova"), ("volumev3", "cinderv3"),
                        ("network", "neutron"), ("image", "glance")):
        if stype not in have:
            ks.catalog(stype, name, f"http://127.0.0.1:{port}/{stype}")


def test_validate_names_missing_services_then_passes(keystone: ops.Keystone) -> None:
    provider = OpenStackProvider()
    if not any(s["type"] == "compute" for s in keystone.admin("GET", "/services")["services"]):
        with pytest.raises(exceptions.ConnectionValidationFailed) as err:
            provider.validate_connection(info(keystone))
        text = str(err.value)
        assert "Nova (compute)" in text and "Cinder (volumev3)" in text
        assert "Neutron (network)" in text and "Glance (image)" in text
        assert PASSWORD not in text
    _catalog_complete(keystone)
    message = provider.validate_connection(info(keystone))
    assert "user osprov" in message and "project osprov-project" in message
    assert "region RegionOne" in message and PASSWORD not in message
    with pytest.raises(exceptions.ConnectionValidationFailed) as err:
        provider.validate_connection(info(keystone, region_name="Nowhere"))
    assert "in region Nowhere" in str(err.value)


def test_wrong_password_is_refused_without_the_secret(keystone: ops.Keystone) -> None:
    wrong = "wrong-pw-7731ac"
    with pytest.raises(exceptions.ConnectionValidationFailed) as err:
        OpenStackProvider().validate_connection(info(keystone, password=wrong))
    text = str(err.value)
    assert "Keystone refused the credentials of osprov" in text and keystone.url in text
    assert wrong not in text and PASSWORD not in text


def test_unreachable_keystone_names_the_url() -> None:
    url = f"http://127.0.0.1:{ops.free_port()}/v3"
    with pytest.raises(exceptions.ConnectionValidationFailed) as err:
        OpenStackProvider().validate_connection({"auth_url": url, "username": "u",
                                                 "password": "p-secret-91",
                                                 "project_name": "p"})
    assert url in str(err.value) and "p-secret-91" not in str(err.value)


def test_application_credential(keystone: ops.Keystone) -> None:
    _catalog_complete(keystone)
    token = keystone.token("osprov", PASSWORD, "osprov-project")
    import requests
    user_id = requests.get(f"{keystone.url}/auth/tokens", timeout=30, headers={
        "X-Auth-Token": token, "X-Subject-Token": token}).json()["token"]["user"]["id"]
    resp = requests.post(f"{keystone.url}/users/{user_id}/application_credentials",
                         timeout=30, headers={"X-Auth-Token": token},
                         json={"application_credential": {"name": "coriolis-test"}})
    resp.raise_for_status()
    cred = resp.json()["application_credential"]
    good = {"auth_url": keystone.url, "application_credential_id": cred["id"],
            "application_credential_secret": cred["secret"]}
    assert "project osprov-project" in OpenStackProvider().validate_connection(good)
    with pytest.raises(exceptions.ConnectionValidationFailed) as err:
        OpenStackProvider().validate_connection(
            {**good, "application_credential_secret": "not-it-0042"})
    assert cred["id"] in str(err.value) and "not-it-0042" not in str(err.value)


def test_check_location_confines_the_nfs_mount(tmp_path: Path) -> None:
    allowed = tmp_path / "mounts"
    allowed.mkdir()
    settings = Settings(data_dir=tmp_path / "data", openstack_mount_roots=[str(allowed)])
    provider = OpenStackProvider()
    provider.check_location({"auth_url": "http://x/v3", "nfs_mount_point_base":
                             str(allowed / "cinder")}, "p1", settings)
    provider.check_location({"auth_url": "http://x/v3"}, "p1", settings)
    for bad in ("/etc", str(allowed / ".." / "elsewhere"), "relative/path"):
        with pytest.raises(exceptions.LocationNotAllowed) as err:
            provider.check_location({"auth_url": "http://x/v3", "nfs_mount_point_base": bad},
                                    "p1", settings)
        assert "connection_info.nfs_mount_point_base" in str(err.value)


def test_cli_create_and_validate(server: RunningServer, keystone: ops.Keystone,
                                 tmp_path: Path) -> None:
    _catalog_complete(keystone)
    conn_file = tmp_path / "os.json"
    conn_file.write_text(json.dumps(info(keystone)))
    server.cli("endpoint", "create", "--name", "osprov-os", "--provider", "openstack",
               "--connection-file", str(conn_file))  # create validates
    out = server.cli("endpoint", "validate", "connection", "osprov-os").stdout
    assert "user osprov" in out and "project osprov-project" in out
    # (endpoint show gives the owner its connection info back, as upstream does)

    conn_file.write_text(json.dumps(info(keystone, password="bad-pw-x9")))
    bad = server.cli("endpoint", "create", "--name", "osprov-bad", "--provider", "openstack",
                     "--connection-file", str(conn_file), check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "Keystone refused the credentials of osprov" in bad.stderr
    assert "bad-pw-x9" not in bad.stderr + bad.stdout
    assert "bad-pw-x9" not in server.log_path.read_text()
    assert PASSWORD not in server.log_path.read_text()

    missing = server.cli("endpoint", "create", "--name", "osprov-missing", "--provider",
                         "openstack", "--connection", json.dumps({"username": "u"}),
                         check=False)
    assert missing.returncode != 0 and "connection_info" in missing.stderr
