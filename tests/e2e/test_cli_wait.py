"""Issue 18, the CLI side: `--wait` and the `wait` commands, errors that explain themselves,
request ids, output shapes; the real `coriolis` CLI against a real all-in-one server with
two `local` clouds (no VMs)."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coriolis.harness import RunningServer, local_cloud, start_server, stop_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """An all-in-one server whose worker reads armed faults from a file (``faults``)."""
    data_dir = tmp_path_factory.mktemp("wait") / "data"
    srv = start_server(data_dir, {"CORIOLIS_TEST_CRASH_AT": f"@{data_dir.parent}/faults"})
    try:
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture
def faults(server: RunningServer) -> Iterator[Path]:
    path = server.data_dir.parent / "faults"
    yield path
    path.unlink(missing_ok=True)

NETWORK_MAP = json.dumps({"lan": "prod"})


@pytest.fixture(scope="module")
def clouds(server: RunningServer) -> dict[str, Path]:
    src, dst = server.cloud_dir("wsrc"), server.cloud_dir("wdst")
    local_cloud("init", str(src), "--network", "lan")
    local_cloud("add-instance", str(src), "small", "--disk-size", "24M", "--disk-format", "raw",
                "--network", "lan")
    for name in ("failing", "held", "tty"):
        local_cloud("add-instance", str(src), name, "--disk-size", "24M", "--network", "lan")
    local_cloud("add-instance", str(src), "corrupt", "--disk-size", "16M",
                "--disk-format", "qcow2", "--network", "lan")
    local_cloud("init", str(dst), "--network", "prod", "--storage", "bulk:raw")
    return {"src": src, "dst": dst}


@pytest.fixture(scope="module")
def endpoints(server: RunningServer, clouds: dict[str, Path]) -> dict[str, str]:
    return {"src": server.local_endpoint("wsrc", clouds["src"]),
            "dst": server.local_endpoint("wdst", clouds["dst"])}


def create_args(instance: str, *extra: str) -> list[str]:
    return ["migration", "create", "--origin-endpoint", "wsrc", "--destination-endpoint",
            "wdst", "--instance", instance, "--network-map", NETWORK_MAP,
            "--destination-environment", '{"storage_backend": "bulk"}', "--skip-os-morphing",
            *extra]


def new_replica(server: RunningServer, instance: str) -> str:
    """``replica create`` of ``instance`` from wsrc to wdst; its id."""
    return server.cli("replica", "create", "--origin-endpoint", "wsrc",
                      "--destination-endpoint", "wdst", "--instance", instance,
                      "--network-map", NETWORK_MAP, "--destination-environment",
                      '{"storage_backend": "bulk"}', "-f", "value", "-c", "id").stdout.strip()


def corrupt_disk(cloud: Path, instance: str) -> None:
    desc = json.loads((cloud / "instances" / instance / "instance.json").read_text())
    disk = cloud / "instances" / instance / desc["disks"][0]["file"]
    disk.write_bytes(b"this is not a qcow2 image" * 1000)


def test_migration_create_wait_succeeds_with_plain_progress(
        server: RunningServer, endpoints: dict[str, str]) -> None:
    # No --source-environment at all (the seed's optional option).
    res = server.cli(*create_args("small", "--wait", "--wait-interval", "0.5", "-f", "json"))
    shown = res.json()
    assert shown["status"] == "COMPLETED"
    # stdout is a pipe here: plain lines on stderr, one per change, no terminal codes.
    assert "\x1b[" not in res.stderr
    lines = res.stderr.splitlines()
    assert "status: COMPLETED" in lines
    assert any(re.search(r"small REPLICATE_DISKS COMPLETED$", line) for line in lines), lines
    assert any("small REPLICATE_DISKS [100%]" in line for line in lines), lines
    # Each phase says when it started (an event), with the time the server recorded it.
    assert any(re.match(r"^\d{4}-\d\d-\d\dT\S+ small DEPLOY_INSTANCE_RESOURCES INFO: .*start",
                        line) for line in lines), lines
    # -f json: nested fields are real structures; tasks a list of objects.
    assert isinstance(shown["tasks"], list) and shown["tasks"]
    assert {"id", "task_type", "status", "progress_updates"} <= set(shown["tasks"][0])
    assert shown["destination_environment"] == {"storage_backend": "bulk"}
    assert shown["network_map"] == {"lan": "prod"}
    yaml_out = server.cli("migration", "show", shown["id"], "-f", "yaml").stdout
    assert "\ntasks:\n- " in yaml_out and "storage_backend: bulk" in yaml_out
    # the table keeps upstream's text rendering
    table = server.cli("migration", "show", shown["id"], "-f", "value", "-c", "tasks").stdout
    assert "task_type: REPLICATE_DISKS" in table
    # `migration wait` on a finished migration returns at once, exit 0.
    again = server.cli("migration", "wait", shown["id"], "-f", "value", "-c", "status")
    assert again.stdout.strip() == "COMPLETED"


def run_on_terminal(server: RunningServer, *args: str) -> tuple[int, str]:
    """The CLI with stdout and stderr on a pseudo-terminal (as a user runs it)."""
    import os
    import pty
    import subprocess

    from coriolis.harness import CLI

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(server.env, COLUMNS="160", TERM="xterm")
    proc = subprocess.Popen([CLI, *args], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_wait_on_a_terminal_shows_a_live_display(
        server: RunningServer, endpoints: dict[str, str]) -> None:
    code, out = run_on_terminal(server, *create_args("tty", "--wait", "-c", "status"))
    assert code == 0, out
    assert "\x1b[" in out  # rich's terminal rendering, not the plain lines
    plain = re.sub("\x1b\\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"tty\s+REPLICATE_DISKS\s+COMPLETED", plain), plain
    assert re.search(r"tty Disk disk0\s+━+\s+100%", plain), plain  # a finished bar per disk
    assert "status: COMPLETED" not in plain  # (that is the plain mode's line)


def test_migration_wait_fails_with_the_reason(
        server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]) -> None:
    corrupt_disk(clouds["src"], "corrupt")
    res = server.cli(*create_args("corrupt", "--wait", "--wait-interval", "0.5"), check=False)
    # Refused at create, the user's disk at fault: a 400 with the reason and the request id.
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "Image is not in qcow2 format (HTTP 400)" in res.stderr, res.stderr
    assert re.search(r"Request-ID: req-[0-9a-f-]{36}", res.stderr)


def test_wait_exits_1_with_the_failing_task_message(
        server: RunningServer, endpoints: dict[str, str], faults: Path) -> None:
    # A task failing while it runs. Injected (the worker's fault hook): a real mid-run
    # provider failure cannot be timed reliably against a 24 MiB copy.
    faults.write_text("REPLICATE_DISKS:fail")
    res = server.cli(*create_args("failing", "--wait", "--wait-interval", "0.5"), check=False)
    assert res.returncode == 1, res.stderr
    assert re.search(r"ERROR: migration \S+ ended in ERROR: REPLICATE_DISKS \(failing\): "
                     r".*injected failure", res.stderr), res.stderr
    assert "Traceback" not in res.stderr


def test_cancel_wait_and_wait_on_a_cancelled_migration(
        server: RunningServer, endpoints: dict[str, str], faults: Path) -> None:
    faults.write_text("REPLICATE_DISKS:hold")  # the copy stays RUNNING until cancelled
    mid = server.cli(*create_args("held", "-f", "value", "-c", "id")).stdout.strip()
    server.wait_for(["migration", "show", mid], lambda m: any(
        t["task_type"] == "REPLICATE_DISKS" and t["status"] == "RUNNING" for t in m["tasks"]))
    server.cli("migration", "cancel", mid, "--wait", "--wait-interval", "0.5")
    assert server.cli("migration", "show", mid, "-f", "value", "-c", "status"
                      ).stdout.strip() == "CANCELED"
    res = server.cli("migration", "wait", mid, check=False)
    assert res.returncode == 1 and f"migration {mid} ended in CANCELED" in res.stderr


def test_replica_execute_wait_and_execution_wait(
        server: RunningServer, endpoints: dict[str, str]) -> None:
    replica = server.cli("replica", "create", "--origin-endpoint", "wsrc",
                         "--destination-endpoint", "wdst", "--instance", "small",
                         "--network-map", NETWORK_MAP, "--destination-environment",
                         '{"storage_backend": "bulk"}', "--source-environment", "{}",
                         "-f", "value", "-c", "id").stdout.strip()
    execution = server.cli("replica", "execute", replica, "--wait", "--wait-interval", "0.5",
                           "-f", "json").json()
    assert execution["status"] == "COMPLETED"
    waited = server.cli("replica", "execution", "wait", replica, execution["id"],
                        "-f", "value", "-c", "status")
    assert waited.stdout.strip() == "COMPLETED"
    bindings = server.bindings()
    assert bindings.replica_executions.wait(replica, execution["id"]).status == "COMPLETED"


def test_wait_timeout_and_unknown_id(server: RunningServer) -> None:
    res = server.cli("migration", "wait", "00000000-0000-0000-0000-000000000000", check=False)
    assert res.returncode == 1 and "HTTP 404" in res.stderr and "Traceback" not in res.stderr


def test_empty_list_with_columns_prints_nothing(server: RunningServer) -> None:
    replica = server.cli("replica", "list", "-f", "value", "-c", "ID").stdout.splitlines()
    for rid in replica:  # a replica with no schedules: an empty list
        res = server.cli("replica", "schedule", "list", rid, "-f", "value", "-c", "ID")
        assert res.returncode == 0 and res.stdout.strip() == ""
    res = server.cli("region", "list", "-f", "value", "-c", "ID")
    assert res.returncode == 0 and res.stdout == ""
    assert server.cli("region", "list", "-f", "json", "-c", "ID").json() == []


def test_request_id_on_every_response(server: RunningServer) -> None:
    for path in ("/", "/v1/nosuch"):
        try:
            with urllib.request.urlopen(server.url + path, timeout=10) as response:
                headers = response.headers
        except urllib.error.HTTPError as exc:
            headers = exc.headers
        assert re.match(r"^req-[0-9a-f-]{36}$", headers["x-openstack-request-id"] or "")
    # The access log names it too.
    server.cli("region", "list")
    assert re.search(r"\[req-[0-9a-f-]{36}\] GET /v1/\S*regions 200 \d+(\.\d+)? ms",
                     server.log_tail(400))


# --- deletes that never 500 and never orphan ----------------------------------------------
def test_endpoint_delete_conflicts_and_unique_names(
        server: RunningServer, endpoints: dict[str, str], clouds: dict[str, Path]) -> None:
    # An endpoint with a live replica: 409 naming it; nothing deleted.
    replica = new_replica(server, "small")
    res = server.cli("endpoint", "delete", "wsrc", check=False)
    assert res.returncode == 1 and "HTTP 409" in res.stderr, res.stderr
    assert f"replica {replica}" in res.stderr
    assert server.cli("endpoint", "show", "wsrc").returncode == 0
    # Same name in the same project: 409, nothing created (create and rename).
    before = server.cli("endpoint", "list", "-f", "value", "-c", "ID").stdout
    res = server.cli("endpoint", "create", "--name", "wsrc", "--provider", "local",
                     "--connection", json.dumps({"path": str(clouds["src"])}), check=False)
    assert res.returncode == 1 and "HTTP 409" in res.stderr and "wsrc" in res.stderr
    res = server.cli("endpoint", "update", endpoints["dst"], "--name", "wsrc", check=False)
    assert res.returncode == 1 and "HTTP 409" in res.stderr
    assert server.cli("endpoint", "list", "-f", "value", "-c", "ID").stdout == before


def test_failed_endpoint_create_creates_nothing(server: RunningServer) -> None:
    before = server.cli("endpoint", "list", "-f", "value", "-c", "Name").stdout
    # The path is allowed but holds a broken cloud: the connection validation fails.
    empty = server.cloud_dir("not-a-cloud")
    local_cloud("init", str(empty), "--network", "lan")
    (empty / "cloud.json").write_text("{not json")
    res = server.cli("endpoint", "create", "--name", "broken", "--provider", "local",
                     "--connection", json.dumps({"path": str(empty)}), check=False)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert server.cli("endpoint", "list", "-f", "value", "-c", "Name").stdout == before


def test_endpoint_delete_after_its_transfers_are_deleted(
        server: RunningServer, clouds: dict[str, Path]) -> None:
    src = server.local_endpoint("tmp-src", clouds["src"])
    dst_cloud = server.cloud_dir("tmp-dst")
    local_cloud("init", str(dst_cloud), "--network", "prod", "--storage", "bulk:raw")
    server.local_endpoint("tmp-dst", dst_cloud)
    mid = server.cli("migration", "create", "--origin-endpoint", "tmp-src",
                     "--destination-endpoint", "tmp-dst", "--instance", "small",
                     "--network-map", NETWORK_MAP, "--destination-environment",
                     '{"storage_backend": "bulk"}', "--source-environment", "{}",
                     "--skip-os-morphing", "--wait", "-f", "value", "-c", "id").stdout.strip()
    server.cli("migration", "delete", mid)
    server.cli("endpoint", "delete", src)  # the deleted migration does not block it
    assert "tmp-src" not in server.cli("endpoint", "list", "-f", "value", "-c", "Name").stdout


def test_replica_delete_refuses_while_it_holds_disks(
        server: RunningServer, endpoints: dict[str, str]) -> None:
    replica = new_replica(server, "failing")
    server.cli("replica", "execute", replica, "--wait", "--wait-interval", "0.5")
    info = server.cli("replica", "show", replica, "--show-instances-data", "-f", "json"
                      ).json()["instances-data"]
    volumes = [Path(v["path"]) for v in info["failing"]["volumes_info"]]
    assert volumes and all(v.exists() for v in volumes)
    res = server.cli("replica", "delete", replica, check=False)
    assert res.returncode == 1 and "--delete-disks" in res.stderr and "failing" in res.stderr
    assert replica in server.cli("replica", "list", "-f", "value", "-c", "ID").stdout
    server.cli("replica", "delete", replica, "--delete-disks", "--wait-interval", "0.5")
    assert replica not in server.cli("replica", "list", "-f", "value", "-c", "ID").stdout
    leftovers = [p for v in volumes for p in v.parent.glob(v.name + "*")]
    assert leftovers == []


# --- schedules in cron syntax ----------------------------------------------------------------
def test_schedule_cron_syntax_and_next_run(
        server: RunningServer, endpoints: dict[str, str]) -> None:
    replica = new_replica(server, "held")
    created = server.cli("replica", "schedule", "create", replica, "-M", "*/5", "-H", "9-17",
                         "-w", "0-4", "-f", "json").json()
    assert created["schedule"] == {"minute": "*/5", "hour": "9-17", "dow": "0-4"}
    when = dt.datetime.fromisoformat(created["next_run"])
    assert when.minute % 5 == 0 and 9 <= when.hour <= 17 and when.weekday() <= 4
    assert when > dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = server.cli("replica", "schedule", "list", replica, "-f", "json").json()
    assert [r["Next Run"] for r in rows] == [created["next_run"]]
    # a disabled schedule has no next run
    server.cli("replica", "schedule", "update", replica, created["id"], "--disabled")
    assert server.cli("replica", "schedule", "show", replica, created["id"], "-f", "value",
                      "-c", "next_run").stdout.strip() in ("", "None")
    # bad input: the field named, nothing created
    bad = server.cli("replica", "schedule", "create", replica, "-M", "*/0", check=False)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "minute" in bad.stderr
    bad = server.cli("replica", "schedule", "create", replica, "-H", "nine", check=False)
    assert bad.returncode == 2 and "nine" in bad.stderr
    assert len(server.cli("replica", "schedule", "list", replica, "-f", "json").json()) == 1
