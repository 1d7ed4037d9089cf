"""`coriolis diagnostics|log|licensing ...` commands."""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from coriolisclient.cli import utils
from coriolisclient.cli.base import Command, Lister, ShowOne
from coriolisclient.v1.logging import SEVERITIES


class GetDiagnostics(Lister):
    """Get diagnostics of every Coriolis service"""

    def take_action(self, args: argparse.Namespace) -> Any:
        rows = sorted(self.client.diagnostics.get(), key=lambda d: d.application)
        return (("Application", "Hostname", "IP addresses", "Packages", "OS info") if rows
                else ()), ((d.application, d.hostname, d.ip_addresses, d.packages, d.os_info)
                           for d in rows)


# --- logs (coriolis-logger) --------------------------------------------------------------------
def parse_time(value: str | None) -> int | None:
    """Unix seconds, or ``<n>s|m|h|d|w`` meaning that long ago."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    match = re.fullmatch(r"(\d+)([smhdw])", value)
    if not match:
        raise utils.CLIError(f"'{value}' is neither unix seconds nor <n>s|m|h|d|w")
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return int(time.time()) - int(match.group(1)) * seconds


class ListLogs(Lister):
    """List the logs of the coriolis-logger service (the server's and workers' logs)"""

    def take_action(self, args: argparse.Namespace) -> Any:
        logs = sorted(self.client.logging.list_logs(), key=lambda entry: entry["log_name"])
        return (("Log name",) if logs else ()), ((entry["log_name"],) for entry in logs)


def _time_options(parser: argparse.ArgumentParser) -> None:
    for option in ("--start-time", "--end-time"):
        parser.add_argument(option, help="Unix seconds, or <n>s|m|h|d|w meaning that long ago")


class ShowLog(Command):
    """Print a log (optionally between two times) on standard output"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("log_name")
        _time_options(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        out = sys.stdout.buffer
        for chunk in self.client.logging.read_log(args.log_name, parse_time(args.start_time),
                                                  parse_time(args.end_time)):
            out.write(chunk)
        out.flush()


class DownloadLog(Command):
    """Download a log from coriolis-logger into a file"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("log_name")
        parser.add_argument("--out-file", required=True)
        _time_options(parser)
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        self.client.logging.download_logs(args.log_name, args.out_file,
                                          parse_time(args.start_time),
                                          parse_time(args.end_time))


class StreamLog(Command):
    """Print new log lines as they are written, until interrupted (Ctrl-C)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--app-name", "--log-name", dest="log_name",
                            help="One log (see 'log list'); every log when absent")
        parser.add_argument("--severity", default="INFO", choices=SEVERITIES,
                            help="Least urgent severity shown (default INFO)")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        lines = self.client.logging.stream(args.log_name, SEVERITIES.index(args.severity))
        try:
            for entry in lines:
                prefix = "" if args.log_name else f"{entry['app_name']}: "
                print(f"{prefix}{entry['message']}", flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            lines.close()


# --- licensing ---------------------------------------------------------------------------------
LICENCE_COLUMNS = ("ID", "Issue Date", "Migrations", "Replicas", "Period Start", "Period End",
                   "Period Duration", "Licence Version")
RESERVATION_COLUMNS = ("ID", "Appliance ID", "Licence ID", "Type", "Count", "Created At")
STATUS_KEYS = ("appliance_id", "earliest_licence_expiry_time", "latest_licence_expiry_time",
               "current_performed_migrations", "current_performed_replicas",
               "current_available_migrations", "current_available_replicas",
               "lifetime_performed_migrations", "lifetime_performed_replicas",
               "lifetime_available_migrations", "lifetime_available_replicas")


def _licence_row(licence: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(licence.get(k) for k in ("id", "issue_date", "migrations", "replicas",
                                           "period_start", "period_end", "period_duration",
                                           "licence_version"))


def _reservation_row(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(r.get(k) for k in ("id", "appliance_id", "licence_id", "type", "count",
                                    "created_at"))


def _licensing(doc: str, positional: tuple[str, ...], call: Any, columns: tuple[str, ...],
               row: Any, many: bool) -> type:
    base: type = Lister if many else ShowOne

    class LicensingCommand(base):  # type: ignore[valid-type,misc]
        __doc__ = doc

        def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
            parser = super().get_parser(prog_name)
            for name in positional:
                parser.add_argument(name)
            return parser

        def take_action(self, args: argparse.Namespace) -> Any:
            result = call(self.client, args)
            if many:
                return (columns if result else ()), (row(r) for r in result)
            return columns, row(result)

    return LicensingCommand


class RegisterLicence(Lister):
    """Register a licence for an appliance"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("appliance_id")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--licence-pem")
        group.add_argument("--licence-pem-file", type=argparse.FileType("r"))
        return parser

    def take_action(self, args: argparse.Namespace) -> Any:
        pem = args.licence_pem or args.licence_pem_file.read()
        return LICENCE_COLUMNS, [_licence_row(
            self.client.licensing.register_licence(args.appliance_id, pem))]


class DeleteLicence(Command):
    """Delete a licence"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("appliance_id")
        parser.add_argument("licence_id")
        return parser

    def take_action(self, args: argparse.Namespace) -> None:
        self.client.licensing.delete_licence(args.appliance_id, args.licence_id)


def _appliance_row(a: dict[str, Any]) -> tuple[Any, ...]:
    return (a.get("id"),)


COMMANDS = {
    "diagnostics get": GetDiagnostics,
    "log list": ListLogs,
    "log show": ShowLog,
    "log download": DownloadLog,
    "log stream": StreamLog,
    "licensing server status": _licensing(
        "Show the licensing server status", (), lambda c, a: c.licensing_server.status(),
        ("Hostname", "Multi-appliance", "Supported Licence Versions", "Server Time"),
        lambda s: (s.get("hostname"), s.get("multi_appliance"),
                   s.get("supported_licence_versions"), s.get("server_local_time")), False),
    "licensing appliance list": _licensing(
        "List appliances", (), lambda c, a: c.licensing.list_appliances(), ("ID",),
        _appliance_row, True),
    "licensing appliance show": _licensing(
        "Show an appliance", ("appliance_id",),
        lambda c, a: c.licensing.get_appliance(a.appliance_id), ("ID",), _appliance_row, False),
    "licensing appliance create": _licensing(
        "Create an appliance", (), lambda c, a: c.licensing.create_appliance(), ("ID",),
        _appliance_row, False),
    "licensing appliance status": _licensing(
        "Show an appliance's licence status", ("appliance_id",),
        lambda c, a: c.licensing.appliance_status(a.appliance_id), STATUS_KEYS,
        lambda s: tuple(s.get(k) for k in STATUS_KEYS), False),
    "licensing licence list": _licensing(
        "List an appliance's licences", ("appliance_id",),
        lambda c, a: sorted(c.licensing.list_licences(a.appliance_id),
                            key=lambda x: x.get("period_end") or ""),
        LICENCE_COLUMNS, _licence_row, True),
    "licensing licence show": _licensing(
        "Show a licence", ("appliance_id", "licence_id"),
        lambda c, a: c.licensing.show_licence(a.appliance_id, a.licence_id), LICENCE_COLUMNS,
        _licence_row, False),
    "licensing licence register": RegisterLicence,
    "licensing licence delete": DeleteLicence,
    "licensing reservation list": _licensing(
        "List an appliance's reservations", ("appliance_id",),
        lambda c, a: c.licensing_reservations.list(a.appliance_id), RESERVATION_COLUMNS,
        _reservation_row, True),
    "licensing reservation show": _licensing(
        "Show a reservation", ("appliance_id", "reservation_id"),
        lambda c, a: c.licensing_reservations.show(a.appliance_id, a.reservation_id),
        RESERVATION_COLUMNS, _reservation_row, False),
    "licensing reservation refresh": _licensing(
        "Refresh a reservation", ("appliance_id", "reservation_id"),
        lambda c, a: c.licensing_reservations.refresh(a.appliance_id, a.reservation_id),
        RESERVATION_COLUMNS, _reservation_row, False),
}
