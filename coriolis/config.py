"""Server settings: command-line values over environment variables over defaults."""

from __future__ import annotations

import configparser
import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from coriolis import constants


class ConfigError(ValueError):
    """The configuration (file, options, environment) is wrong; the message says where."""


def _root_template(template: str) -> str:
    """A local cloud root as configured: an absolute path; "{project_id}" is the only field."""
    template = template.strip()
    try:
        template.format(project_id="x")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"local cloud root {template!r}: only {{project_id}} may be "
                          "replaced") from None
    if not os.path.isabs(template):
        raise ConfigError(f"local cloud root {template!r} must be an absolute path")
    return template


def default_data_dir() -> Path:
    env = os.environ.get("CORIOLIS_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coriolis"


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = constants.DEFAULT_API_PORT
    data_dir: Path = Path()
    database_url: str | None = None
    workers: int = 4
    token_ttl_seconds: int = 12 * 3600
    # Scale-out mode: the broker (kombu URL, e.g. amqp://guest:guest@127.0.0.1:5672//) and a
    # prefix for its exchanges and queues, so that several deployments can share one broker.
    transport_url: str | None = None
    bus_namespace: str = ""
    # Workers heart-beat every heartbeat_interval seconds; one silent for worker_down_after
    # seconds is marked DOWN and its tasks are taken over.
    heartbeat_interval: float = 0.0
    worker_down_after: float = 0.0
    # Minion pool upkeep (refill, idle retention, health checks) every so many seconds
    # ($CORIOLIS_POOL_UPKEEP_INTERVAL, default 60; 0 or less: never).
    pool_upkeep_interval: float | None = None
    # An INI file (--config-file, $CORIOLIS_CONFIG_FILE, else DATA_DIR/coriolis.conf if it
    # exists) whose [keystone] and [barbican] sections point at a real Keystone / Barbican.
    config_file: Path | None = None
    keystone: dict[str, str] | None = None
    barbican: dict[str, str] | None = None
    policy: dict[str, str] | None = None  # [policy] rule overrides (identity/policy.py)
    # The largest API request body, in bytes (a larger one is a 413):
    # $CORIOLIS_MAX_REQUEST_BODY_BYTES, else [api] max_request_body_size, else 1 MiB.
    max_request_body_bytes: int = 0
    api: dict[str, str] = field(default_factory=dict)  # the [api] section
    # Directories where the local clouds of a project may be (templates; "{project_id}" is
    # replaced by the project's id): $CORIOLIS_LOCAL_ROOT (separated by ':'), else
    # [local] root (one a line), else DATA_DIR/clouds/{project_id}.
    local_roots: list[str] = field(default_factory=list)
    # Whether projects may use this server's own hosts' libvirt daemons (qemu:///system,
    # qemu+unix:// endpoints): $CORIOLIS_LIBVIRT_ALLOW_LOCAL, else [libvirt] allow_local;
    # off by default, since such an endpoint controls the worker's host.
    libvirt_allow_local: bool | None = None
    libvirt: dict[str, str] = field(default_factory=dict)  # the [libvirt] section
    # Folders of this server's hosts where Cinder NFS shares may be mounted for the openstack
    # provider (its endpoints' nfs_mount_point_base): $CORIOLIS_OPENSTACK_MOUNT_ROOTS
    # (separated by ':'), else [openstack] mount_roots (one a line); none by default.
    openstack_mount_roots: list[str] = field(default_factory=list)
    openstack: dict[str, str] = field(default_factory=dict)  # the [openstack] section

    def __post_init__(self) -> None:
        if self.data_dir == Path():
            self.data_dir = default_data_dir()
        self.data_dir = Path(self.data_dir).expanduser().resolve()
        if self.database_url is None:
            self.database_url = os.environ.get("CORIOLIS_DATABASE_URL") or (
                f"sqlite:///{self.data_dir / 'coriolis.db'}")
        if self.transport_url is None:
            self.transport_url = os.environ.get("CORIOLIS_TRANSPORT_URL")
        self.bus_namespace = self.bus_namespace or os.environ.get(
            "CORIOLIS_BUS_NAMESPACE", "coriolis")
        self.heartbeat_interval = self.heartbeat_interval or float(
            os.environ.get("CORIOLIS_HEARTBEAT_INTERVAL", "5"))
        self.worker_down_after = self.worker_down_after or float(
            os.environ.get("CORIOLIS_WORKER_DOWN_AFTER", "30"))
        if self.pool_upkeep_interval is None:
            self.pool_upkeep_interval = float(
                os.environ.get("CORIOLIS_POOL_UPKEEP_INTERVAL", "60"))
        self.token_ttl_seconds = int(os.environ.get("CORIOLIS_TOKEN_TTL",
                                                    self.token_ttl_seconds))
        explicit_roots = bool(self.local_roots)
        self._read_config_file()
        env_roots = os.environ.get("CORIOLIS_LOCAL_ROOT")
        if env_roots and not explicit_roots:
            self.local_roots = env_roots.split(os.pathsep)
        if not self.local_roots:
            self.local_roots = [str(self.data_dir / "clouds" / "{project_id}")]
        self.local_roots = [_root_template(r) for r in self.local_roots if r.strip()]
        if self.libvirt_allow_local is None:
            raw = os.environ.get("CORIOLIS_LIBVIRT_ALLOW_LOCAL") or self.libvirt.get(
                "allow_local", "")
            self.libvirt_allow_local = raw.strip().lower() in ("1", "true", "yes", "on")
        if not self.openstack_mount_roots:
            raw_roots = os.environ.get("CORIOLIS_OPENSTACK_MOUNT_ROOTS") or self.openstack.get(
                "mount_roots", "")
            self.openstack_mount_roots = [r for r in raw_roots.replace(
                os.pathsep, "\n").splitlines() if r.strip()]
        self._body_limit()

    def _body_limit(self) -> None:
        if self.max_request_body_bytes:
            return
        raw = os.environ.get("CORIOLIS_MAX_REQUEST_BODY_BYTES") or self.api.get(
            "max_request_body_size")
        try:
            self.max_request_body_bytes = int(raw) if raw else 1024 * 1024
        except ValueError:
            raise ConfigError(f"max request body size is not a number of bytes: {raw}") from None
        if self.max_request_body_bytes < 1024:
            raise ConfigError("max request body size must be at least 1024 bytes")

    def _read_config_file(self) -> None:
        path = self.config_file or os.environ.get("CORIOLIS_CONFIG_FILE")
        if path is None and (self.data_dir / "coriolis.conf").exists():
            path = self.data_dir / "coriolis.conf"
        if path is None:
            return
        self.config_file = Path(path)
        # '=' only: policy rule names contain ':'.
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        try:
            with open(self.config_file) as f:
                parser.read_file(f)
        except (OSError, configparser.Error) as exc:
            raise ConfigError(f"cannot read the configuration file {path}: {exc}") from None
        for section in ("keystone", "barbican", "policy"):
            if parser.has_section(section):
                setattr(self, section, dict(parser.items(section)))
        if parser.has_section("api"):
            self.api = dict(parser.items("api"))
        if parser.has_section("libvirt"):
            self.libvirt = dict(parser.items("libvirt"))
        if parser.has_section("openstack"):
            self.openstack = dict(parser.items("openstack"))
        if parser.has_option("local", "root") and not self.local_roots:
            self.local_roots = parser.get("local", "root").splitlines()
        if self.keystone is not None:
            missing = [k for k in ("auth_url", "username", "password", "project_name")
                       if not self.keystone.get(k)]
            if missing:
                raise ConfigError(f"{path}: [keystone] lacks {', '.join(missing)}")

    def local_roots_for(self, project_id: str) -> list[Path]:
        """The directories (absolute, symlinks resolved, created if missing and possible)
        where project ``project_id``'s local clouds may be; ``ValueError`` for an id that is
        not a plain name."""
        if not project_id or "/" in project_id or project_id in (".", ".."):
            raise ValueError(f"invalid project id {project_id!r}")
        roots = []
        for template in self.local_roots:
            root = Path(template.replace("{project_id}", project_id))
            with contextlib.suppress(OSError):  # one this server may not make stays unmade
                root.mkdir(parents=True, exist_ok=True, mode=0o700)
            roots.append(Path(os.path.realpath(root)))
        return roots

    def make_data_dir(self) -> None:
        """Create the data directory and make what the server keeps there private: the
        process's new files 0600 and folders 0700 (umask 077: the database, its -wal and -shm,
        logs, manifests, keys), and the same for what an older version left readable (the
        clouds under DATA_DIR/clouds are left as they are)."""
        os.umask(0o077)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for folder, dirs, files in os.walk(self.data_dir):
            base = Path(folder)
            if base == self.data_dir:
                dirs[:] = [d for d in dirs if d != "clouds"]
            for name, mode in [(".", 0o700), *((f, 0o600) for f in files)]:
                path = base / name
                with contextlib.suppress(FileNotFoundError):
                    info = path.lstat()
                    if not stat.S_ISLNK(info.st_mode) and stat.S_IMODE(info.st_mode) != mode:
                        os.chmod(path, mode)

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.keys"

    @property
    def token_key_file(self) -> Path:
        return self.data_dir / "token.key"
