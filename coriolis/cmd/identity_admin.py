"""`coriolis-server user|project|role|keys`: the embedded identity's users, projects and
role assignments, and the encryption key ring. They work on the database and data directory
directly, while the server runs or not."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from coriolis import exceptions
from coriolis.config import Settings


def _db(args: argparse.Namespace) -> Any:
    from coriolis.cmd.server import _settings
    from coriolis.db.session import Database

    settings: Settings = _settings(args)
    settings.make_data_dir()
    assert settings.database_url is not None
    db = Database(settings.database_url)
    db.create_schema()
    return settings, db


def _in_session(action: Callable[[Any, argparse.Namespace], str]
                ) -> Callable[[argparse.Namespace], None]:
    """Run ``action(session, args)`` in one transaction and print what it returns; errors
    become a message and exit status 1."""
    def run(args: argparse.Namespace) -> None:
        _, db = _db(args)
        try:
            with db.session() as session:
                message = action(session, args)
        except exceptions.CoriolisError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(message)
    return run


def _user_create(session: Any, args: argparse.Namespace) -> str:
    from coriolis.identity.users import create_user

    roles = args.roles or ["member"]
    user = create_user(session, args.name, args.password, args.project, roles)
    return (f"user {user.name} ({user.id}) created in project {args.project} with roles "
            f"{', '.join(roles)}")


def _user_list(session: Any, args: argparse.Namespace) -> str:
    from sqlalchemy import select

    from coriolis.db import models
    from coriolis.identity.users import assignments

    roles: dict[str, list[str]] = {}
    for user, project, role in assignments(session):
        roles.setdefault(user, []).append(f"{project}:{role}")
    rows = [f"{u.name}\t{u.id}\t{'enabled' if u.enabled else 'disabled'}\t"
            f"{' '.join(roles.get(u.name, []))}"
            for u in session.scalars(select(models.User).order_by(models.User.name))]
    return "\n".join(["name\tid\tstate\tproject:role", *rows])


def _user_set(session: Any, args: argparse.Namespace) -> str:
    from coriolis.identity import users

    if args.password is None and args.enabled is None:
        raise exceptions.InvalidInput("nothing to change: give --password, --enable or "
                                      "--disable")
    if args.password is not None:
        users.set_password(session, args.name, args.password)
    if args.enabled is not None:
        users.set_enabled(session, args.name, args.enabled)
    return f"user {args.name} updated; the tokens it held are revoked"


def _user_delete(session: Any, args: argparse.Namespace) -> str:
    from coriolis.identity.users import delete_user

    delete_user(session, args.name)
    return f"user {args.name} deleted"


def _project_create(session: Any, args: argparse.Namespace) -> str:
    from sqlalchemy import select

    from coriolis.db import models
    from coriolis.identity.users import get_or_create_project

    if session.scalar(select(models.Project).where(models.Project.name == args.name)):
        raise exceptions.Conflict(f"project '{args.name}' already exists")
    project = get_or_create_project(session, args.name)
    return f"project {project.name} ({project.id}) created"


def _project_list(session: Any, args: argparse.Namespace) -> str:
    from sqlalchemy import select

    from coriolis.db import models

    rows = [f"{p.name}\t{p.id}"
            for p in session.scalars(select(models.Project).order_by(models.Project.name))]
    return "\n".join(["name\tid", *rows])


def _role_add(session: Any, args: argparse.Namespace) -> str:
    from coriolis.identity import users

    user = users.find_user(session, args.user)
    users.assign(session, user, users.find_project(session, name=args.project), [args.role])
    return f"user {args.user} has role {args.role} in project {args.project}"


def _role_remove(session: Any, args: argparse.Namespace) -> str:
    from coriolis.identity.users import unassign

    unassign(session, args.user, args.project, args.role)
    return (f"role {args.role} of user {args.user} in project {args.project} removed; the "
            "tokens the user held are revoked")


def _keys_list(args: argparse.Namespace) -> None:
    from coriolis.secrets.box import SecretBox
    from coriolis.secrets.rotation import usage

    settings, db = _db(args)
    box = SecretBox.from_key_file(settings.secret_key_file)
    used = usage(db, box)
    primary, keys = box.ring.load()
    print("key\tprimary\tvalues")
    for kid in keys:
        print(f"{kid}\t{'yes' if kid == primary else ''}\t{used.get(kid, 0)}")


def _keys_rotate(args: argparse.Namespace) -> None:
    from coriolis.secrets.box import SecretBox
    from coriolis.secrets.rotation import rotate

    settings, db = _db(args)
    box = SecretBox.from_key_file(settings.secret_key_file)
    report = rotate(db, box, drop_old=not args.keep_old)
    print(f"new primary key {report.new_key}; {report.reencrypted} value(s) re-encrypted; "
          f"dropped keys: {', '.join(report.dropped) or 'none'}")


def register_subcommands(sub: argparse._SubParsersAction,
                         data_options: Callable[[argparse.ArgumentParser], None]) -> None:
    def command(parent: argparse._SubParsersAction, name: str, text: str,
                func: Callable[[argparse.Namespace], None]) -> argparse.ArgumentParser:
        parser = parent.add_parser(name, help=text)
        data_options(parser)
        parser.set_defaults(func=func)
        return parser

    user = sub.add_parser("user", help="embedded identity: users").add_subparsers(
        dest="user_command", required=True)
    create = command(user, "create", "create a user with roles in a project",
                     _in_session(_user_create))
    create.add_argument("name")
    create.add_argument("--password", required=True)
    create.add_argument("--project", required=True, help="project name (created if missing)")
    create.add_argument("--role", dest="roles", action="append", default=None,
                        help="role in the project (default: member); may be repeated")
    command(user, "list", "users, their state and roles", _in_session(_user_list))
    update = command(user, "set", "change a user's password or enabled flag (revokes the "
                                  "user's tokens)", _in_session(_user_set))
    update.add_argument("name")
    update.add_argument("--password")
    flag = update.add_mutually_exclusive_group()
    flag.add_argument("--enable", dest="enabled", action="store_true", default=None)
    flag.add_argument("--disable", dest="enabled", action="store_false")
    command(user, "delete", "delete a user", _in_session(_user_delete)).add_argument("name")

    project = sub.add_parser("project", help="embedded identity: projects").add_subparsers(
        dest="project_command", required=True)
    command(project, "create", "create a project",
            _in_session(_project_create)).add_argument("name")
    command(project, "list", "list projects", _in_session(_project_list))

    role = sub.add_parser("role", help="embedded identity: role assignments").add_subparsers(
        dest="role_command", required=True)
    for name, text, func in (("add", "give a user a role in a project", _role_add),
                             ("remove", "take a role away (revokes the user's tokens)",
                              _role_remove)):
        parser = command(role, name, text, _in_session(func))
        parser.add_argument("role", help="admin or member")
        parser.add_argument("--user", required=True)
        parser.add_argument("--project", required=True)

    keys = sub.add_parser("keys", help="encryption keys of connection info and secrets"
                          ).add_subparsers(dest="keys_command", required=True)
    command(keys, "list", "keys of the key ring and how many values each encrypts",
            _keys_list)
    rotate = command(keys, "rotate", "new primary key, every value re-encrypted with it, "
                                     "unused keys dropped", _keys_rotate)
    rotate.add_argument("--keep-old", action="store_true",
                        help="keep the previous keys in the ring")
