"""Server settings: command-line values over environment variables over defaults."""

from __future__ import annotations

import configparser
import os
from dataclasses import dataclass, field
from pathlib import Path

from coriolis import constants


class ConfigError(ValueError):
    """The configuration (file, options, environment) is wrong; the message says where."""


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
        self.token_ttl_seconds = int(os.environ.get("CORIOLIS_TOKEN_TTL",
                                                    self.token_ttl_seconds))
        self._read_config_file()
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
        if self.keystone is not None:
            missing = [k for k in ("auth_url", "username", "password", "project_name")
                       if not self.keystone.get(k)]
            if missing:
                raise ConfigError(f"{path}: [keystone] lacks {', '.join(missing)}")

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.keys"

    @property
    def token_key_file(self) -> Path:
        return self.data_dir / "token.key"
