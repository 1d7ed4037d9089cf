"""The CLI's output helpers: secrets masked in shown connection info, structured fields."""

from __future__ import annotations

import json

from coriolisclient.cli import base, utils


def test_mask_secrets_at_any_depth() -> None:
    conn = {"host": "h", "username": "u", "password": "p",
            "nested": {"api_key": "k", "private_key_data": "pem", "port": 1},
            "list": [{"token": "t"}], "empty_secret": "", "secret_ref": "http://kms/s/1"}
    assert utils.mask_secrets(conn) == {
        "host": "h", "username": "u", "password": "***",
        "nested": {"api_key": "***", "private_key_data": "***", "port": 1},
        "list": [{"token": "***"}], "empty_secret": "", "secret_ref": "http://kms/s/1"}


def test_structured_fields_by_format() -> None:
    class Args:
        formatter = "json"

    field = utils.format_json({"a": [1, 2]})
    assert json.loads(field) == {"a": [1, 2]}  # the text still is JSON for table output
    assert base.structured(Args(), ["x", field]) == ["x", {"a": [1, 2]}]
    Args.formatter = "table"
    assert base.structured(Args(), ["x", field])[1] is field


def test_every_option_of_every_command_has_help() -> None:
    import argparse

    from coriolisclient.cli import shell

    app = shell.CoriolisApp()
    missing = []
    for name, entry in app.command_manager:
        command = (entry.load() if hasattr(entry, "load") else entry)(app, None)
        for action in command.get_parser(f"coriolis {name}")._actions:
            if not action.help and not isinstance(action, argparse._HelpAction):
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_provider_errors_reach_the_user_with_secrets_redacted() -> None:
    from coriolis.worker.service import redact

    conn = {"uri": "qemu+ssh://root@kvm1/system", "ssh": {"password": "s3cr3t-pw"},
            "keys": ["-----BEGIN KEY-----abc"], "port": 22, "x": "ab"}
    message = ("libvirtError: auth failed for qemu+ssh://root@kvm1/system with s3cr3t-pw "
               "and -----BEGIN KEY-----abc (ab)")
    assert redact(message, conn, None) == \
        "libvirtError: auth failed for *** with *** and *** (ab)"
