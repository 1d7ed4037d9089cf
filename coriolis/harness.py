"""Run an all-in-one server (or the scale-out mode's processes) as child processes and drive
the `coriolis` CLI against it.

Used by the end-to-end tests, the demo (scripts/demo.py) and the benchmarks."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

BIN = Path(sys.executable).parent
SERVER = str(BIN / "coriolis-server")
CLI = str(BIN / "coriolis")
LISTEN_RE = re.compile(r"Coriolis API listening on (http://\S+)")
WRITER_RE = re.compile(r"Writer agent listening on (https://\S+)")


def read_openrc(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"export (\w+)=(.*)$", line.strip())
        if m:
            value = m.group(2)
            if value[:1] in "'\"" and value[-1:] == value[:1]:
                value = value[1:-1]
            env[m.group(1)] = value
    return env


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


@dataclass
class RunningServer:
    url: str
    data_dir: Path
    env: dict[str, str]
    process: subprocess.Popen[str]
    log_path: Path

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None) -> CliResult:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        # Tokens the CLI keeps between commands stay with this server, not in ~/.cache.
        full_env["CORIOLIS_TOKEN_CACHE_DIR"] = str(self.token_cache_dir)
        full_env.update(self.env)
        if env:
            full_env.update(env)
        proc = subprocess.run(
            [CLI, *args], capture_output=True, text=True, env=full_env, timeout=300
        )
        result = CliResult(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"coriolis {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}"
            )
        return result

    @property
    def token_cache_dir(self) -> Path:
        """Where the CLI run by ``cli`` keeps its tokens (``CORIOLIS_TOKEN_CACHE_DIR``)."""
        return self.data_dir.parent / f"{self.data_dir.name}-tokens"

    @functools.cached_property
    def project_id(self) -> str:
        """The id of the openrc's project (the admin's), from a token the server issues."""
        user = {"name": self.env["OS_USERNAME"], "password": self.env["OS_PASSWORD"],
                "domain": {"name": "Default"}}
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}},
                         "scope": {"project": {"name": self.env["OS_PROJECT_NAME"],
                                               "domain": {"name": "Default"}}}}}
        request = urllib.request.Request(
            f"{self.env['OS_AUTH_URL']}/auth/tokens", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return str(json.load(response)["token"]["project"]["id"])

    def cloud_dir(self, name: str, project_id: str | None = None) -> Path:
        """DATA_DIR/clouds/PROJECT/NAME: where the server lets a project (the openrc's by
        default) keep its local cloud NAME (the all-in-one's default local cloud root)."""
        return self.data_dir / "clouds" / (project_id or self.project_id) / name

    def local_endpoint(self, name: str, path: Path) -> str:
        """``coriolis endpoint create`` of a ``local`` endpoint on the cloud at ``path``;
        returns its id."""
        return str(self.cli("endpoint", "create", "--name", name, "--provider", "local",
                            "--connection", json.dumps({"path": str(path)}),
                            "-f", "json").json()["id"])

    def bindings(self) -> Any:
        """The Python bindings (``coriolisclient.client.Client``) logged in as the admin."""
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        from coriolisclient import client

        auth = v3.Password(
            auth_url=self.env["OS_AUTH_URL"], username=self.env["OS_USERNAME"],
            password=self.env["OS_PASSWORD"], project_name=self.env["OS_PROJECT_NAME"],
            user_domain_name="Default", project_domain_name="Default")
        return client.Client(session=session.Session(auth=auth))

    def wait_for(self, args: list[str], predicate: Callable[[Any], bool],
                 timeout: float = 180.0, env: dict[str, str] | None = None) -> Any:
        """Re-run a `-f json` show command until ``predicate(data)`` holds."""
        deadline = time.monotonic() + timeout
        data = None
        while time.monotonic() < deadline:
            data = self.cli(*args, "-f", "json", env=env).json()
            if predicate(data):
                return data
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:g} s waiting on {args}: "
                             f"{transfer_summary(data)}\nserver log, last lines:\n"
                             f"{self.log_tail()}"
                             f"\nlast={data}")

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


# Every log of a process started by _spawn, so that a failed test can show the ones written
# while it ran (tests/conftest.py), before pytest's temporary folders are recycled.
SPAWNED_LOGS: list[Path] = []


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def transfer_summary(data: Any) -> str:
    """A transfer's status, its tasks' ``type/instance=status`` and the exception details of
    those that have some (a failed task's error), short enough to survive a truncated CI
    log. ``data``: a ``migration|replica show -f json`` answer (tasks as the CLI renders them
    or as a list of task objects)."""
    if not isinstance(data, dict):
        return repr(data)[:300]
    raw = data.get("tasks")
    tasks = parse_tasks(raw) if isinstance(raw, (str, list)) and raw else []
    parts = []
    for t in tasks:
        text = f"{t.get('task_type')}/{t.get('instance')}={t.get('status')}"
        details = (t.get("exception_details") or "").strip()
        if details and details != "None":
            text += f" ({details[-400:]})"
        parts.append(text)
    status = data.get("last_execution_status") or data.get("status")
    return f"id={data.get('id')} status={status} tasks=" + ", ".join(parts)


def _spawn(cmd: list[str], ready: re.Pattern[str], log_path: Path,
           env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], re.Match[str]]:
    """Start ``cmd`` (with ``env`` added to this environment), wait for a stdout line
    matching ``ready``, keep draining stdout."""
    log = open(log_path, "a")  # noqa: SIM115 - closed by the fixture through the process
    SPAWNED_LOGS.append(log_path)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    match = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        match = ready.search(line)
        if match:
            break
    if match is None:
        proc.kill()
        raise RuntimeError(f"{cmd[1]} did not start; see {log_path}:\n{log_path.read_text()}")
    # keep draining stdout so the process never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    return proc, match


def start_server(data_dir: Path, env: dict[str, str] | None = None) -> RunningServer:
    """An all-in-one server on ``data_dir``, with ``env`` added to this environment."""
    log_path = data_dir.parent / f"{data_dir.name}-server.out"
    proc, match = _spawn([SERVER, "all-in-one", "--host", "127.0.0.1", "--port", "0",
                          "--data-dir", str(data_dir)], LISTEN_RE, log_path, env)
    # No openrc when the server trusts a real Keystone (DATA_DIR/coriolis.conf).
    env = read_openrc(data_dir / "openrc") if (data_dir / "openrc").exists() else {}
    return RunningServer(url=match.group(1), data_dir=data_dir, env=env, process=proc,
                         log_path=log_path)


@dataclass
class RunningWriter:
    """A writer agent child process; ``details`` is its writer.json (url, fingerprint, key)."""

    data_dir: Path
    roots: list[Path]
    process: subprocess.Popen[str]
    details: dict[str, str]
    log_path: Path

    @property
    def port(self) -> int:
        return int(self.details["url"].rsplit(":", 1)[1])


def start_writer(data_dir: Path, roots: list[Path], port: int = 0) -> RunningWriter:
    """Start ``coriolis-server writer`` (again on ``port``, to restart one that was killed)."""
    log_path = data_dir.parent / f"{data_dir.name}-writer.out"
    cmd = [SERVER, "writer", "--host", "127.0.0.1", "--port", str(port),
           "--data-dir", str(data_dir), "-v"]
    for root in roots:
        cmd += ["--root", str(root)]
    proc, _ = _spawn(cmd, WRITER_RE, log_path)
    details = json.loads((data_dir / "writer.json").read_text())
    return RunningWriter(data_dir, roots, proc, details, log_path)


class _HasProcess(Protocol):
    process: subprocess.Popen[str]


def stop_server(server: _HasProcess) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


# ============================================================== scale-out mode
@dataclass
class RunningPart:
    """A ``conductor``, ``scheduler`` or ``worker`` child process of the scale-out mode."""

    name: str
    process: subprocess.Popen[str]
    log_path: Path


@dataclass
class Cluster:
    """API, conductor, scheduler and workers as separate processes sharing one PostgreSQL
    database and one RabbitMQ namespace; ``env`` (heartbeat settings...) goes to every one."""

    data_dir: Path
    database_url: str
    transport_url: str
    namespace: str
    env: dict[str, str]
    max_tasks: int = 4
    api: RunningServer | None = None
    parts: dict[str, RunningPart] = field(default_factory=dict)

    def _options(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--database-url", self.database_url,
                "--transport-url", self.transport_url, "--bus-namespace", self.namespace, "-v"]

    def start_api(self) -> RunningServer:
        log_path = self.data_dir.parent / "api.out"
        proc, match = _spawn([SERVER, "api", "--host", "127.0.0.1", "--port", "0",
                              *self._options()], LISTEN_RE, log_path, self.env)
        self.api = RunningServer(url=match.group(1), data_dir=self.data_dir,
                                 env=read_openrc(self.data_dir / "openrc"), process=proc,
                                 log_path=log_path)
        return self.api

    def start_part(self, kind: str, name: str | None = None) -> RunningPart:
        """``kind``: conductor, scheduler or worker (then ``name`` is its host name)."""
        key = name or kind
        extra = ["--name", key, "--max-tasks", str(self.max_tasks)] if kind == "worker" else []
        ready = re.compile(rf"coriolis ({kind} running|worker {re.escape(key)} ready)")
        log_path = self.data_dir.parent / f"{key}.out"
        proc, _ = _spawn([SERVER, kind, *extra, *self._options()], ready, log_path, self.env)
        self.parts[key] = RunningPart(key, proc, log_path)
        return self.parts[key]

    def kill(self, name: str) -> None:
        part = self.parts.pop(name)
        part.process.send_signal(signal.SIGKILL)
        part.process.wait()

    def stop(self) -> None:
        processes: list[_HasProcess] = [*self.parts.values()]
        if self.api is not None:
            processes.append(self.api)
        for part in processes:
            stop_server(part)
        self.parts.clear()


def start_cluster(data_dir: Path, database_url: str, transport_url: str, namespace: str,
                  workers: list[str], env: dict[str, str] | None = None,
                  max_tasks: int = 4) -> Cluster:
    """The database schema first (by the conductor), then the API, the scheduler and the
    workers."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(data_dir, database_url, transport_url, namespace, env or {}, max_tasks)
    try:
        cluster.start_part("conductor")
        cluster.start_api()
        cluster.start_part("scheduler")
        for name in workers:
            cluster.start_part("worker", name)
    except BaseException:
        cluster.stop()
        raise
    return cluster


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A fresh PostgreSQL database named ``prefix_<random>`` on the server of ``admin_url``
    (``postgresql+psycopg://USER@HOST:PORT``), dropped on exit; yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(f"{admin_url}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield f"{admin_url}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def local_cloud(*args: str) -> str:
    """Run ``coriolis-server local-cloud ARGS`` (build sample clouds and instances)."""
    proc = subprocess.run([SERVER, "local-cloud", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"local-cloud {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def processes_naming(text: str) -> list[str]:
    """Command lines of this host's processes that contain ``text`` (a disk path, say: qemu
    names its drives on its command line)."""
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmdline = path.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def parse_tasks(rendered: str | list[dict[str, Any]]) -> list[dict[str, str]]:
    """Split the CLI's rendering of ``tasks`` (blocks of ``key: value`` lines separated by
    blank lines) into dicts; ``progress_updates`` keeps its following lines joined. The
    list of task objects ``-f json`` gives is first rendered as the table shows it."""
    if not isinstance(rendered, str):
        import importlib  # the client's own rendering (a separate package for mypy)
        format_tasks = importlib.import_module("coriolisclient.cli.utils").format_tasks
        rendered = str.__str__(format_tasks(rendered))
    tasks: list[dict[str, str]] = []
    for block in rendered.strip().split("\n\n"):
        task: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            m = re.match(r"^(\w+):\s?(.*)$", line)
            if m and m.group(1) in {"id", "task_type", "instance", "status", "depends_on",
                                    "exception_details", "progress_updates"}:
                key = m.group(1)
                task[key] = m.group(2)
            elif key:
                task[key] = (task[key] + "\n" + line).strip()
        if task:
            tasks.append(task)
    return tasks


# ============================================================== benchmarks
def bench_parser(doc: str, runs: int, size: str | None = None) -> argparse.ArgumentParser:
    """The options every benchmark script shares: --runs, and --size for those that make a
    source disk (parse it with ``local_cloud.parse_size``)."""
    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--runs", type=int, default=runs)
    if size is not None:
        parser.add_argument("--size", default=size)
    return parser


# ============================================================== benchmark disks
SOURCE_ALLOCATED = 512 * 1024 * 1024


def source_disks(work: Path, size: int) -> list[tuple[str, Path, int]]:
    """The P1/P3 sources: a raw disk of ``size`` with 512 MiB of random data in scattered
    regions, and the same as qcow2; each as (format, path, allocated bytes)."""
    from coriolis.cmd.local_cloud import make_disk
    from coriolis.transfer.extents import qemu_img_extents

    raw = work / "src.raw"
    make_disk(raw, size, "raw", allocated_fraction=SOURCE_ALLOCATED / size, seed=1)
    qcow2 = work / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True)
    return [(fmt, path, sum(e.length for e in qemu_img_extents(str(path), fmt) if not e.zero))
            for fmt, path in (("raw", raw), ("qcow2", qcow2))]
