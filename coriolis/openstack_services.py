"""A real OpenStack Keystone and Barbican (from PyPI) on loopback, for tests: SQLite,
fernet tokens, Barbican's simple crypto plugin, each served by uWSGI from its own virtualenv
(cached under ``~/.cache/coriolis/openstack``, about 40 s to build each the first time).

Notes that cost time to find out: uWSGI's HTTP socket closes connections without saying so,
so both servers send ``Connection: close`` (pooled clients fail otherwise); Barbican on SQLite
needs a single thread; keystonemiddleware in Barbican must use the public identity endpoint;
Barbican reads its configuration from ``$HOME/.barbican`` when it is imported.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from coriolis import cache_lock

KEYSTONE_PACKAGES = ("keystone==30.0.0", "uwsgi==2.0.31")
BARBICAN_PACKAGES = ("barbican==23.0.0", "uwsgi==2.0.31", "python-barbicanclient==7.6.0")
ADMIN_PASSWORD = "keystone-admin-pw"


def _cache() -> Path:
    return Path(os.environ.get("CORIOLIS_OPENSTACK_CACHE",
                               Path.home() / ".cache" / "coriolis" / "openstack"))


def venv(name: str, packages: tuple[str, ...], constraints: Path | None = None) -> Path:
    """A virtualenv with ``packages`` (under pip ``constraints`` when given), built once per
    set of versions; the build runs under ``nice``."""
    key = " ".join(packages) + (constraints.read_text() if constraints else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    path = _cache() / f"{name}-{digest}"
    if (path / ".complete").exists():
        return path
    with cache_lock.building(path):
        if not (path / ".complete").exists():
            _build_venv(path, packages, constraints)
    return path


def _build_venv(path: Path, packages: tuple[str, ...], constraints: Path | None) -> None:
    shutil.rmtree(path, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    pin = ["-c", str(constraints)] if constraints else []
    proc = subprocess.run(["nice", str(path / "bin" / "pip"), "install", "-q",
                           "--disable-pip-version-check", *pin, *packages],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(packages)} failed:\n{proc.stderr[-3000:]}")
    (path / ".complete").touch()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uwsgi(env_dir: Path, port: int, app: list[str], log: Path, threads: int,
           env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [str(env_dir / "bin" / "uwsgi"), "--http-socket", f"127.0.0.1:{port}", *app,
           "--virtualenv", str(env_dir), "--master", "--processes", "1", "--threads",
           str(threads), "--enable-threads", "--lazy-apps", "--need-app", "--die-on-term",
           "--add-header", "Connection: close"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
                                start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-3000:]}")
        try:
            requests.get(url, timeout=10)  # the first request loads the application
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s: {log.read_text()[-3000:]}")


def stop_processes(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGINT,
                   grace: float = 10) -> None:
    """Send ``sig`` to each process group, then SIGKILL whatever still runs after ``grace``
    seconds (Nova services ignore SIGTERM for over a minute)."""
    alive = [proc for proc in procs if proc.poll() is None]
    for proc in alive:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    deadline = time.monotonic() + grace
    for proc in alive:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    stop_processes([proc])


@dataclass
class Keystone:
    url: str  # .../v3
    process: subprocess.Popen[bytes]
    _roles: dict[str, str] = field(default_factory=dict)

    def token(self, user: str, password: str, project: str) -> str:
        resp = requests.post(f"{self.url}/auth/tokens", timeout=30, json={"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"id": "default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
        resp.raise_for_status()
        return str(resp.headers["X-Subject-Token"])

    def admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = requests.request(method, f"{self.url}{path}", json=body, timeout=30, headers={
            "X-Auth-Token": self.token("admin", ADMIN_PASSWORD, "admin")})
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def role_id(self, name: str) -> str:
        if name not in self._roles:
            found = self.admin("GET", f"/roles?name={name}")["roles"]
            self._roles[name] = found[0]["id"] if found else self.admin(
                "POST", "/roles", {"role": {"name": name}})["role"]["id"]
        return self._roles[name]

    def project(self, name: str) -> str:
        found = self.admin("GET", f"/projects?name={name}")["projects"]
        if found:
            return str(found[0]["id"])
        return str(self.admin("POST", "/projects", {"project": {
            "name": name, "domain_id": "default"}})["project"]["id"])

    def user(self, name: str, password: str, project: str, roles: tuple[str, ...]) -> str:
        project_id = self.project(project)
        user_id = self.admin("POST", "/users", {"user": {
            "name": name, "password": password, "domain_id": "default",
            "default_project_id": project_id}})["user"]["id"]
        for role in roles:
            self.admin("PUT", f"/projects/{project_id}/users/{user_id}/roles/"
                              f"{self.role_id(role)}")
        return str(user_id)

    def catalog(self, service_type: str, name: str, url: str) -> None:
        service = self.admin("POST", "/services", {"service": {"type": service_type,
                                                               "name": name}})["service"]
        for interface in ("public", "internal", "admin"):
            self.admin("POST", "/endpoints", {"endpoint": {
                "service_id": service["id"], "interface": interface, "url": url,
                "region_id": "RegionOne"}})

    def revoke(self, token: str) -> None:
        resp = requests.delete(f"{self.url}/auth/tokens", timeout=30, headers={
            "X-Auth-Token": self.token("admin", ADMIN_PASSWORD, "admin"),
            "X-Subject-Token": token})
        resp.raise_for_status()

    def stop(self) -> None:
        _stop(self.process)


def start_keystone(work: Path, env_dir: Path | None = None) -> Keystone:
    """Keystone from ``env_dir`` (default: its own cached virtualenv), bootstrapped with the
    ``admin`` user, project and role and its own catalog entry in ``RegionOne``."""
    env_dir = env_dir or venv("keystone", KEYSTONE_PACKAGES)
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v3"
    conf = work / "keystone.conf"
    conf.write_text(f"""[DEFAULT]
log_dir = {work}
[database]
connection = sqlite:///{work}/keystone.db
[token]
provider = fernet
[fernet_tokens]
key_repository = {work}/fernet-keys
[fernet_receipts]
key_repository = {work}/fernet-keys
[credential]
key_repository = {work}/credential-keys
[identity]
password_hash_rounds = 4
""")
    manage = [str(env_dir / "bin" / "keystone-manage"), "--config-file", str(conf)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for step in (["db_sync"],
                 ["fernet_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["credential_setup", "--keystone-user", "root", "--keystone-group", "root"],
                 ["bootstrap", "--bootstrap-password", ADMIN_PASSWORD,
                  "--bootstrap-username", "admin", "--bootstrap-project-name", "admin",
                  "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
                  "--bootstrap-region-id", "RegionOne", "--bootstrap-public-url", url,
                  "--bootstrap-internal-url", url, "--bootstrap-admin-url", url]):
        subprocess.run([*manage, *step], check=True, capture_output=True, env=env)
    log = work / "uwsgi.log"
    proc = uwsgi(env_dir, port, ["--module", "keystone.wsgi.api:application"], log, 4,
                  {"OS_KEYSTONE_CONFIG_FILES": str(conf)})
    wait_http(url, proc, log)
    return Keystone(url, proc)


@dataclass
class Barbican:
    url: str
    process: subprocess.Popen[bytes]
    cli_bin: Path

    def cli(self, keystone: Keystone, user: str, password: str, project: str,
            *args: str) -> subprocess.CompletedProcess[str]:
        """The real `barbican` command line, authenticated through Keystone."""
        return subprocess.run(
            [str(self.cli_bin), "--os-auth-url", keystone.url, "--os-identity-api-version",
             "3", "--os-username", user, "--os-password", password, "--os-project-name",
             project, "--os-user-domain-id", "default", "--os-project-domain-id", "default",
             *args], capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})

    def stop(self) -> None:
        _stop(self.process)


def start_barbican(work: Path, keystone: Keystone) -> Barbican:
    env_dir = venv("barbican", BARBICAN_PACKAGES)
    home = work / "home"
    (home / ".barbican").mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    kek = base64.b64encode(os.urandom(32)).decode()
    (home / ".barbican" / "barbican.conf").write_text(f"""[DEFAULT]
host_href = {url}
db_auto_create = True
log_file = {work}/barbican-api.log
[database]
connection = sqlite:///{work}/barbican.sqlite
[secretstore]
namespace = barbican.secretstore.plugin
enabled_secretstore_plugins = store_crypto
[crypto]
namespace = barbican.crypto.plugin
enabled_crypto_plugins = simple_crypto
[simple_crypto_plugin]
kek = {kek}
[keystone_authtoken]
www_authenticate_uri = {keystone.url}
auth_url = {keystone.url}
auth_type = password
username = admin
password = {ADMIN_PASSWORD}
project_name = admin
user_domain_id = default
project_domain_id = default
interface = public
""")
    paste = next(env_dir.rglob("barbican-api-paste.ini"))
    keystone.catalog("key-manager", "barbican", url)
    log = work / "uwsgi.log"
    proc = uwsgi(env_dir, port, ["--paste", f"config:{paste}"], log, 1, {"HOME": str(home)})
    wait_http(url + "/", proc, log)
    return Barbican(url, proc, env_dir / "bin" / "barbican")


def secret_href(output: str) -> str:
    """The secret's href in `barbican secret store -f json` output."""
    return str(json.loads(output)["Secret href"])
