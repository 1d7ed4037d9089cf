"""Option groups and output formatting shared by every command family."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
from typing import Any

OS_LIST = ("bsd", "linux", "osx", "solaris", "windows", "other", "unknown")


class CLIError(Exception):
    """A usage error detected by the CLI (shown as ``ERROR: ...``, exit code 1)."""


# --- JSON pairs: --X <json> | --X-file <path> ------------------------------------------------
def add_json_pair(parser: argparse.ArgumentParser, name: str, help_text: str) -> None:
    group = parser.add_mutually_exclusive_group()
    dest = name.replace("-", "_")
    group.add_argument(f"--{name}", dest=dest, help=f"{help_text} (JSON)")
    group.add_argument(f"--{name}-file", dest=f"{dest}_file", type=argparse.FileType("r"),
                       help=f"{help_text} (path of a JSON file)")


_JSON_KINDS = {str: "a string", int: "a number", float: "a number", bool: "a boolean",
               list: "a list", type(None): "null"}


def get_json_pair(args: argparse.Namespace, name: str,
                  required: bool = False) -> dict[str, Any] | None:
    """The JSON object given by ``--NAME`` or ``--NAME-file`` (None if neither is), or a
    CLIError naming the option when it is not JSON or not an object."""
    dest = name.replace("-", "_")
    raw, source = getattr(args, dest, None), f"--{name}"
    file = getattr(args, f"{dest}_file", None)
    if file is not None:
        with file:
            raw, source = file.read(), f"--{name}-file"
    value = None
    if raw is not None:
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise CLIError(f"{source} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise CLIError(f"{source} must be a JSON object ({{...}}), not "
                           f"{_JSON_KINDS.get(type(value), type(value).__name__)}")
    if required and not value:
        raise CLIError(f"--{name}[-file] is required and must not be empty")
    return value


# --- storage mappings --------------------------------------------------------------------------
def _mapping(value: str) -> tuple[str, str]:
    parts = value.split("=")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"'{value}' must be of the form SOURCE=DESTINATION")
    return parts[0].strip("'\""), parts[1].strip("'\"")


def add_storage_mappings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--default-storage-backend", dest="default_storage_backend",
                        help="Name of the destination storage backend to default to")
    parser.add_argument("--disk-storage-mapping", dest="disk_storage_mappings",
                        action="append", type=_mapping, default=[],
                        help="DISK_ID=BACKEND; may be repeated")
    parser.add_argument("--storage-backend-mapping", dest="storage_backend_mappings",
                        action="append", type=_mapping, default=[],
                        help="SOURCE_BACKEND=DESTINATION_BACKEND; may be repeated")


def get_storage_mappings(args: argparse.Namespace) -> dict[str, Any]:
    mappings: dict[str, Any] = {}
    if args.default_storage_backend:
        mappings["default"] = args.default_storage_backend
    if args.disk_storage_mappings:
        mappings["disk_mappings"] = [{"disk_id": d, "destination": b}
                                     for d, b in args.disk_storage_mappings]
    if args.storage_backend_mappings:
        mappings["backend_mappings"] = [{"source": s, "destination": d}
                                        for s, d in args.storage_backend_mappings]
    return mappings


# --- user scripts ------------------------------------------------------------------------------
def add_user_scripts(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-script-global", dest="global_scripts", action="append",
                        default=[], help=f"OS_TYPE=PATH, OS_TYPE one of {', '.join(OS_LIST)}")
    parser.add_argument("--user-script-instance", dest="instance_scripts", action="append",
                        default=[], help="INSTANCE=PATH; an empty PATH removes the script")


def _read_script(path: str) -> str | None:
    if not path:
        return None
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise CLIError(f"cannot read user script {path}: {exc.strerror}") from None


def get_user_scripts(args: argparse.Namespace) -> dict[str, Any]:
    scripts: dict[str, Any] = {"global": {}, "instances": {}}
    for item in args.global_scripts:
        if "=" not in item:
            continue
        os_type, path = item.split("=", 1)
        if os_type not in OS_LIST:
            raise CLIError(f"--user-script-global: OS type must be one of {', '.join(OS_LIST)}")
        scripts["global"][os_type] = _read_script(path)
    for item in args.instance_scripts:
        if "=" not in item:
            continue
        instance, path = item.split("=", 1)
        scripts["instances"][instance] = _read_script(path)
    return scripts


# --- minion pools ------------------------------------------------------------------------------
def add_pool_mappings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--osmorphing-minion-pool-mapping", action="append", type=_mapping,
                        dest="instance_osmorphing_minion_pool_mappings", default=[],
                        help="INSTANCE=MINION_POOL_ID; may be repeated")


def add_pools(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--origin-minion-pool-id", help="Source minion pool")
    parser.add_argument("--destination-minion-pool-id", help="Destination minion pool")
    add_pool_mappings(parser)


def get_pool_mappings(args: argparse.Namespace) -> dict[str, str]:
    return dict(args.instance_osmorphing_minion_pool_mappings)


# --- dates -------------------------------------------------------------------------------------
def parse_utc(value: str) -> dt.datetime:
    """ISO 8601 → naive UTC."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CLIError(f"'{value}' is not an ISO 8601 date") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


# --- formatting --------------------------------------------------------------------------------
class Structured(str):
    """A field's text for table, value, shell and csv output (indented JSON, rendered
    tasks) that keeps the structure it shows in ``data``: ``-f json|yaml`` print that
    instead (``base.structured``), so nested fields are real lists and objects there."""

    data: Any

    def __new__(cls, text: str, data: Any) -> Structured:
        obj = super().__new__(cls, text)
        obj.data = data
        return obj


def format_json(value: Any, indent: int | None = 2) -> Structured:
    value = value if value is not None else {}
    return Structured(json.dumps(value, indent=indent), value)


SECRET_KEY = re.compile(r"pass|secret|token|private|credential|api_?key|^key$", re.I)


def _is_secret(key: str, value: Any) -> bool:
    """A secret-looking key with a scalar value; a reference (``secret_ref``: a Barbican
    URL) is not the secret itself."""
    return (bool(SECRET_KEY.search(key)) and not key.endswith("_ref")
            and value not in (None, "") and not isinstance(value, (dict, list)))


def mask_secrets(value: Any) -> Any:
    """``value`` with the values of secret-looking keys (password, secret, token, private
    key, credentials, api key) replaced by ``***`` at any depth (not ``*_ref`` references)."""
    if isinstance(value, dict):
        return {k: "***" if _is_secret(str(k), v) else mask_secrets(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def format_mapping(mapping: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def parse_storage_mappings(mappings: dict[str, Any] | None
                           ) -> tuple[str | None, dict[str, str], dict[str, str]]:
    if mappings is None:
        return None, {}, {}
    backends = {m["source"]: m["destination"] for m in mappings.get("backend_mappings") or []}
    disks = {m["disk_id"]: m["destination"] for m in mappings.get("disk_mappings") or []}
    return mappings.get("default"), backends, disks


def format_progress_update(update: dict[str, Any]) -> str:
    """``<time> [<pct>%] <message>``; the time is the update's last change (``updated_at``:
    a disk's update keeps moving), else its creation."""
    when = update.get("updated_at") or update.get("created_at")
    current, total = update.get("current_step"), update.get("total_steps")
    if current and total:
        return f"{when} [{current * 100 / total:.0f}%] {update.get('message')}"
    return f"{when} {update.get('message')}"


def format_task(task: dict[str, Any]) -> str:
    values = dict(task)
    values["depends_on"] = ", ".join(task.get("depends_on") or [])
    updates = sorted(task.get("progress_updates") or [],
                     key=lambda p: (p.get("index", 0), p.get("created_at") or ""))
    progress = "progress_updates:"
    if updates:
        progress += os.linesep + os.linesep.join(format_progress_update(u) for u in updates)
    lines = [f"{k}: {values.get(k) or ''}" for k in
             ("id", "task_type", "instance", "status", "depends_on", "exception_details")]
    return os.linesep.join([*lines, progress])


def format_tasks(tasks: list[dict[str, Any]]) -> Structured:
    """The tasks as text blocks (upstream's rendering); ``-f json|yaml`` get the list of
    task objects (with their progress updates and events)."""
    return Structured((os.linesep * 2).join(format_task(t) for t in tasks), list(tasks))


def by_created(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda i: getattr(i, "created_at", None) or "")
