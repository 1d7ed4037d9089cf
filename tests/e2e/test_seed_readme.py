"""The seed README (upstream python-coriolisclient's README.rst) taken literally, through our
`coriolis` CLI against a real all-in-one server: its login example, `service update
--enabled/--disabled`, `migration deploy replica` with pool ids, and the log service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coriolis.harness import CLI, SERVER, RunningServer, local_cloud

pytestmark = pytest.mark.e2e
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
OS_KEYS = ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD", "OS_PROJECT_NAME", "OS_TENANT_NAME",
           "OS_USER_DOMAIN_NAME", "OS_PROJECT_DOMAIN_NAME", "OS_IDENTITY_API_VERSION",
           "OS_PROJECT_ID", "OS_TENANT_ID", "OS_USER_ID", "OS_AUTH_TOKEN")


def only(**values: str) -> dict[str, str]:
    """An environment with exactly these OS_* variables (every other one blanked)."""
    return {**{k: "" for k in OS_KEYS}, **values}


def test_seed_login_example_v2_with_nothing_else(server: RunningServer) -> None:
    # The seed: OS_AUTH_URL=http://HOST:PORT/v2.0, OS_USERNAME, OS_PASSWORD, OS_TENANT_NAME.
    # Our server's identity serves Keystone v2.0 under /identity/v2.0.
    env = only(OS_AUTH_URL=server.url + "/identity/v2.0", OS_USERNAME="admin",
               OS_PASSWORD=server.env["OS_PASSWORD"], OS_TENANT_NAME="admin")
    res = server.cli("provider", "list", "-f", "json", env=env)
    assert "local" in {p["Platform"] for p in res.json()}
    assert res.stderr == ""
    # The trailing slash spelling too.
    env["OS_AUTH_URL"] += "/"
    assert server.cli("endpoint", "list", env=env).returncode == 0
    # An explicit version still wins: v3 against a v2.0 URL fails (no v3 scope given).
    bad = server.cli("endpoint", "list", env={**env, "OS_IDENTITY_API_VERSION": "3"},
                     check=False)
    assert bad.returncode == 1 and "Identity v3 needs" in bad.stderr


def test_v3_inferred_from_the_auth_url(server: RunningServer) -> None:
    env = only(OS_AUTH_URL=server.url + "/identity/v3", OS_USERNAME="admin",
               OS_PASSWORD=server.env["OS_PASSWORD"], OS_PROJECT_NAME="admin",
               OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default")
    assert server.cli("endpoint", "list", env=env).returncode == 0


def test_service_update_enabled_keeps_regions(server: RunningServer) -> None:
    region = server.cli("region", "create", "--enabled", "--description", "public clouds",
                        "seed-public", "-f", "json").json()["ID"]
    service = server.cli("service", "create", "--host", "seed-host", "--binary",
                         "coriolis-worker", "--topic", "seed", "--coriolis-region", region,
                         "-f", "json").json()["ID"]
    try:
        disabled = server.cli("service", "update", "--disabled", service, "-f", "json").json()
        assert disabled["Enabled"] is False
        assert disabled["Mapped Region IDs"] == [region]
        enabled = server.cli("service", "update", "--enabled", service, "-f", "json").json()
        assert enabled["Enabled"] is True and enabled["Mapped Region IDs"] == [region]
        # Regions are replaced when given.
        other = server.cli("region", "create", "seed-other", "-f", "json").json()["ID"]
        moved = server.cli("service", "update", "--coriolis-region", other, service,
                           "-f", "json").json()
        assert moved["Mapped Region IDs"] == [other]
    finally:
        server.cli("service", "delete", service)


@pytest.fixture(scope="module")
def replica(server: RunningServer) -> str:
    src, dst = server.cloud_dir("seed-src"), server.cloud_dir("seed-dst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "seedvm", "--disk-size", "8M", "--network", "lan")
    local_cloud("init", str(dst), "--network", "lan")
    for name, path in (("seed-src", src), ("seed-dst", dst)):
        server.local_endpoint(name, path)
    created = server.cli(
        "replica", "create", "--origin-endpoint", "seed-src", "--destination-endpoint",
        "seed-dst", "--instance", "seedvm", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()
    execution = server.cli("replica", "execute", created["id"], "-f", "json").json()
    done = server.wait_for(["replica", "execution", "show", created["id"], execution["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED", done["tasks"]
    return created["id"]


def remove_deployed(server: RunningServer) -> None:
    """Remove what an earlier deploy made on the destination cloud (deleting a migration
    leaves its instance), so that the next deploy of the same instance can run."""
    shutil.rmtree(server.cloud_dir("seed-dst") / "instances" / "seedvm", ignore_errors=True)


def test_deploy_replica_with_the_seed_s_pool_options(server: RunningServer, replica: str,
                                                     tmp_path: Path) -> None:
    origin, destination = "6b3a4a5e-0000-4000-8000-00000000000a", \
        "6b3a4a5e-0000-4000-8000-00000000000b"
    deployed = server.cli(
        "migration", "deploy", "replica", "--destination-minion-pool-id", destination,
        "--origin-minion-pool-id", origin, "--skip-os-morphing", replica, "-f", "json").json()
    assert deployed["origin_minion_pool_id"] == origin
    assert deployed["destination_minion_pool_id"] == destination
    done = server.wait_for(["migration", "show", deployed["id"]],
                           lambda m: m["status"] in FINAL)
    assert done["status"] == "COMPLETED"
    assert (done["origin_minion_pool_id"], done["destination_minion_pool_id"]) == (
        origin, destination)
    # Without the options, nothing is sent and nothing recorded.
    remove_deployed(server)
    plain = server.cli("deployment", "create", "--skip-os-morphing", replica,
                       "-f", "json").json()
    assert plain["origin_minion_pool_id"] is None
    server.wait_for(["deployment", "show", plain["id"]], lambda m: m["status"] in FINAL)
    for mid in (deployed["id"], plain["id"]):
        server.cli("migration", "delete", mid)
    assert json.loads(server.cli("migration", "list", "-f", "json").stdout or "[]") == []


# ------------------------------------------------------------------ the coriolis-logger service
def log_fds(server: RunningServer) -> int:
    """How many descriptors the server process holds on its coriolis.log."""
    target = str((server.data_dir / "coriolis.log").resolve())
    fd_dir = Path(f"/proc/{server.process.pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        try:
            count += os.readlink(fd) == target
        except OSError:
            continue
    return count


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cli_env(server: RunningServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return {**env, **server.env}


def test_log_list_and_show(server: RunningServer, replica: str) -> None:
    listed = server.cli("log", "list", "-f", "json")
    assert listed.json() == [{"Log name": "coriolis"}] and listed.stderr == ""
    # The replica's execution finished: the conductor logged it, and `log show` has it.
    text = server.cli("log", "show", "coriolis").stdout
    assert f"of replica {replica} finished: COMPLETED" in text
    # A range in the future has nothing; one covering the last hour has it all.
    assert server.cli("log", "show", "coriolis", "--start-time",
                      str(int(time.time()) + 3600)).stdout == ""
    def quiet(log: str) -> list[str]:  # without the access lines, which these reads add
        return [line for line in log.splitlines() if "coriolis.api.access" not in line]
    again = server.cli("log", "show", "coriolis", "--start-time", "1h",
                       "--end-time", str(int(time.time()) + 60)).stdout
    assert quiet(again) == quiet(text) and "coriolis.api.access" in again
    missing = server.cli("log", "show", "coriolis-nope", check=False)
    assert missing.returncode == 1 and "Log coriolis-nope could not be found (HTTP 404)" in \
        missing.stderr


def test_logs_are_admin_only(server: RunningServer) -> None:
    subprocess.run([SERVER, "user", "create", "logreader", "--password", "lr-pass",
                    "--project", "seed-team", "--data-dir", str(server.data_dir)],
                   check=True, capture_output=True)
    member = {"OS_USERNAME": "logreader", "OS_PASSWORD": "lr-pass",
              "OS_PROJECT_NAME": "seed-team"}
    for args in (["log", "list"], ["log", "show", "coriolis"],
                 ["log", "stream", "--app-name", "coriolis"]):
        res = server.cli(*args, env=member, check=False)
        assert res.returncode == 1 and "(HTTP 403)" in res.stderr, (args, res.stderr)
        assert "logs:" in res.stderr


def test_log_stream_is_live_filtered_and_frees_its_files(server: RunningServer,
                                                         replica: str) -> None:
    before = log_fds(server)
    streams = {severity: subprocess.Popen(
        [CLI, "log", "stream", "--app-name", "coriolis", "--severity", severity],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(server))
        for severity in ("INFO", "WARNING")}
    try:
        wait_until(lambda: log_fds(server) == before + 2, "both streams to open the log")
        # Lines the server writes from now on: a replica execution's, and two appended to
        # its log file as its own logging writes them.
        execution = server.cli("replica", "execute", replica, "-f", "json").json()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S,000")
        with open(server.data_dir / "coriolis.log", "a") as f:
            f.write(f"{stamp} WARNING coriolis.test: seed-warning line\n"
                    f"{stamp} DEBUG coriolis.test: seed-debug line\n")
        info_lines = []
        for line in streams["INFO"].stdout:  # type: ignore[union-attr]
            info_lines.append(line)
            if f"{execution['id']} of replica {replica} finished" in line:
                break
        assert any("seed-warning line" in line for line in info_lines)
        assert not any("seed-debug line" in line for line in info_lines)
        warning_first = streams["WARNING"].stdout.readline()  # type: ignore[union-attr]
        assert "seed-warning line" in warning_first
    finally:
        for proc in streams.values():
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    # The client went away: the server closed what each stream held.
    wait_until(lambda: log_fds(server) == before, "the streams' files to be closed")
    assert all(proc.returncode == 0 for proc in streams.values())
    assert all(proc.stderr.read() == "" for proc in streams.values())  # type: ignore[union-attr]


# ------------------------------------------------ the newer API generation: transfers, deployments
def test_replicas_are_transfers_and_the_reverse(server: RunningServer, replica: str) -> None:
    listed = server.cli("transfer", "list", "-f", "json").json()
    assert [(t["ID"], t["Scenario"]) for t in listed] == [(replica, "replica")]
    shown = server.cli("transfer", "show", replica, "-f", "json").json()
    assert shown["id"] == replica and shown["instances"] == "seedvm"

    created = server.cli(
        "transfer", "create", "--scenario", "live_migration", "--dont-clone-disks",
        "--origin-endpoint", "seed-src", "--destination-endpoint", "seed-dst",
        "--instance", "seedvm", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "-f", "json").json()
    assert created["scenario_type"] == "live_migration"
    as_replica = server.cli("replica", "show", created["id"], "-f", "json").json()
    assert as_replica["scenario_type"] == "live_migration"
    wire = server.bindings().transfers.get(created["id"])
    assert (wire.clone_disks, wire.skip_os_morphing) == (False, False)

    schedule = server.cli("transfer", "schedule", "create", created["id"], "-M", "7",
                          "--disabled", "-f", "json").json()
    assert [s["ID"] for s in server.cli("replica", "schedule", "list", created["id"],
                                        "-f", "json").json()] == [schedule["id"]]
    rows = server.cli("transfer", "schedule", "list", created["id"], "-f", "json").json()
    assert rows[0]["Transfer ID"] == created["id"]
    moved = server.cli("transfer", "schedule", "update", created["id"], schedule["id"],
                       "-H", "5", "--enabled", "-f", "json").json()
    assert (moved["schedule"], moved["enabled"]) == ({"hour": 5}, True)
    assert server.cli("transfer", "schedule", "show", created["id"], schedule["id"],
                      "-f", "json").json()["schedule"] == {"hour": 5}
    server.cli("transfer", "schedule", "delete", created["id"], schedule["id"])

    update = server.cli("transfer", "update", created["id"], "--notes", "via transfers",
                        "-f", "json").json()
    finished = server.wait_for(["transfer", "execution", "show", created["id"], update["id"]],
                               lambda e: e["status"] in FINAL)
    assert finished["status"] == "COMPLETED"
    assert server.cli("replica", "show", created["id"], "-f", "json").json()["notes"] == \
        "via transfers"
    server.cli("transfer", "execution", "delete", created["id"], update["id"])
    assert server.cli("transfer", "execution", "list", created["id"], "-f", "json").json() == []
    server.cli("transfer", "delete", created["id"])
    assert [r["ID"] for r in server.cli("replica", "list", "-f", "json").json()] == [replica]


def test_transfer_executions_and_deployments(server: RunningServer, replica: str) -> None:
    before = {e["ID"] for e in server.cli("replica", "execution", "list", replica,
                                          "-f", "json").json()}
    execution = server.cli("transfer", "execute", replica, "-f", "json").json()
    done = server.wait_for(["transfer", "execution", "show", replica, execution["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED" and done["replica_id"] == replica
    listed = server.cli("transfer", "execution", "list", replica, "-f", "json").json()
    assert {e["ID"] for e in listed} == before | {execution["id"]}
    assert all(e["Transfer ID"] == replica for e in listed)

    # The newer generation's deployment body names the transfer `transfer_id`.
    remove_deployed(server)
    client = server.bindings()
    deployment = client.deployments.create_from_transfer(replica, skip_os_morphing=True)
    assert deployment.transfer_id == replica
    finished = server.wait_for(["deployment", "show", deployment.id],
                               lambda m: m["status"] in FINAL)
    assert finished["status"] == "COMPLETED" and finished["replica_id"] == replica
    shown = client.deployments.get(deployment.id)
    assert (shown.transfer_id, shown.transfer_scenario_type) == (replica, "replica")
    # A deployment is a migration too.
    assert deployment.id in {m["ID"] for m in server.cli("migration", "list", "-f",
                                                         "json").json()}
    server.cli("deployment", "delete", deployment.id)
    assert client.deployments.list() == []

    # A plain migration is a deployment without a transfer.
    remove_deployed(server)
    migration = server.cli(
        "migration", "create", "--origin-endpoint", "seed-src", "--destination-endpoint",
        "seed-dst", "--instance", "seedvm", "--source-environment", '{"snapshot": false}',
        "--destination-environment", '{"storage_backend": "default"}',
        "--network-map", '{"lan": "lan"}', "--skip-os-morphing", "-f", "json").json()
    as_deployment = server.wait_for(["deployment", "show", migration["id"]],
                                    lambda m: m["status"] in FINAL)
    assert as_deployment["status"] == "COMPLETED" and as_deployment["replica_id"] is None
    assert [d["ID"] for d in server.cli("deployment", "list", "-f", "json").json()] == [
        migration["id"]]
    assert client.deployments.get(migration["id"]).transfer_id is None


def test_seed_region_endpoint_and_schedule_spellings(server: RunningServer, replica: str,
                                                     tmp_path: Path) -> None:
    """The seed's region, endpoint-region and schedule examples, spelled as it spells them."""
    public = server.cli("region", "create", "--enabled", "--description",
                        "This a Coriolis region for public clouds", "Public",
                        "-f", "json").json()["ID"]
    assert server.cli("region", "show", public, "-f", "json").json()["Enabled"] is True
    updated = server.cli("region", "update", "--disabled", "--description",
                         "This is the Region's new description.", "--name",
                         "This is the Region's new name.", public, "-f", "json").json()
    assert (updated["Name"], updated["Enabled"]) == ("This is the Region's new name.", False)
    other = server.cli("region", "create", "--disabled", "Private", "-f", "json").json()["ID"]
    conn = tmp_path / "conn.json"
    conn.write_text(json.dumps({"path": str(server.cloud_dir("seed-dst"))}))
    endpoint = server.cli("endpoint", "create", "--name", "seed-regions", "--provider",
                          "local", "--description", "regions example", "--connection-file",
                          str(conn), "-f", "json").json()["id"]
    mapped = server.cli("endpoint", "update", "--coriolis-region", public,
                        "--coriolis-region", other, endpoint, "-f", "json").json()
    assert sorted(mapped["mapped_regions"]) == sorted([public, other])
    server.cli("endpoint", "delete", endpoint)

    created = server.cli("replica", "schedule", "create", replica, "-M", "5", "-H", "3",
                         "-d", "1", "-m", "2", "-f", "json").json()
    assert created["schedule"] == {"minute": 5, "hour": 3, "dom": 1, "month": 2}
    changed = server.cli("replica", "schedule", "update", replica, created["id"], "-M", "6",
                         "-H", "4", "-w", "0", "-f", "json").json()
    # As upstream's, an update's schedule replaces the whole cron object.
    assert changed["schedule"] == {"minute": 6, "hour": 4, "dow": 0}
    assert server.cli("replica", "schedule", "show", replica, created["id"],
                      "-f", "json").json()["schedule"] == changed["schedule"]
    server.cli("replica", "schedule", "delete", replica, created["id"])
    assert server.cli("replica", "schedule", "list", replica, "-f", "json").json() == []


def test_transfer_auto_deploy_with_its_stored_defaults(server: RunningServer,
                                                       replica: str) -> None:
    # `transfer update` sets the defaults of the transfer's deployments.
    update = server.cli("transfer", "update", replica, "--skip-os-morphing",
                        "--dont-clone-disks", "-f", "json").json()
    assert server.wait_for(["transfer", "execution", "show", replica, update["id"]],
                           lambda e: e["status"] in FINAL)["status"] == "COMPLETED"
    wire = server.bindings().transfers.get(replica)
    assert (wire.skip_os_morphing, wire.clone_disks) == (True, False)
    update = server.cli("transfer", "update", replica, "--clone-disks", "-f", "json").json()
    server.wait_for(["transfer", "execution", "show", replica, update["id"]],
                    lambda e: e["status"] in FINAL)
    wire = server.bindings().transfers.get(replica)
    assert (wire.skip_os_morphing, wire.clone_disks) == (True, True)

    remove_deployed(server)
    before = {d["ID"] for d in server.cli("deployment", "list", "-f", "json").json()}
    execution = server.cli("transfer", "execute", "--auto-deploy", replica, "-f",
                           "json").json()
    done = server.wait_for(["transfer", "execution", "show", replica, execution["id"]],
                           lambda e: e["status"] in FINAL)
    assert done["status"] == "COMPLETED"
    made = [d["ID"] for d in server.cli("deployment", "list", "-f", "json").json()
            if d["ID"] not in before]
    assert len(made) == 1
    deployed = server.wait_for(["deployment", "show", made[0]],
                               lambda m: m["status"] in FINAL)
    assert deployed["status"] == "COMPLETED" and deployed["replica_id"] == replica
    shown = server.bindings().deployments.get(made[0])
    assert (shown.transfer_id, shown.skip_os_morphing, shown.clone_disks) == (
        replica, True, True)
    server.cli("deployment", "delete", made[0])

    # A schedule that deploys after each execution.
    schedule = server.cli("transfer", "schedule", "create", replica, "-M", "7",
                          "--auto-deploy", "--disabled", "-f", "json").json()
    assert schedule["auto_deploy"] is True
    client = server.bindings()
    assert client.transfer_schedules.get(replica, schedule["id"]).auto_deploy is True
    changed = server.cli("transfer", "schedule", "update", replica, schedule["id"],
                         "--dont-auto-deploy", "-f", "json").json()
    assert changed["auto_deploy"] is False
    assert server.cli("transfer", "schedule", "show", replica, schedule["id"], "-f",
                      "json").json()["auto_deploy"] is False
    assert "auto_deploy" not in server.cli("replica", "schedule", "show", replica,
                                           schedule["id"], "-f", "json").json()
    server.cli("transfer", "schedule", "delete", replica, schedule["id"])


def test_newer_lists_filter_sort_and_page(server: RunningServer, replica: str) -> None:
    api = server.bindings().api

    def listed(path: str) -> list[str]:
        resp = api.get(path, raise_exc=False)
        assert resp.status_code == 200, resp.text
        return [item["id"] for item in resp.json()[path.split("?")[0].strip("/")]]

    assert listed("/transfers?status=COMPLETED") == [replica]
    assert listed("/transfers?status=RUNNING") == []
    assert listed(f"/transfers?marker={replica}&limit=5") == []
    assert listed("/transfers?limit=0") == []
    deployments = listed("/deployments?sort_key=created_at&sort_dir=desc")
    assert deployments == listed("/deployments")[::-1]
    for path, name in (("/transfers?status=FINE", "status"),
                       ("/deployments?limit=ten", "limit"),
                       ("/deployments?sort_key=info", "sort_key"),
                       ("/transfers?sort_dir=sideways", "sort_dir"),
                       ("/deployments?marker=nothing", "marker")):
        resp = api.get(path, raise_exc=False)
        assert resp.status_code == 400, (path, resp.text)
        assert resp.json()["error"]["message"].startswith(f"{name}:"), resp.text
    # The older generation's lists take no such parameters (as upstream's).
    assert listed("/replicas?status=FINE") == [replica]
