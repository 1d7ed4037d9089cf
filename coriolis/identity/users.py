"""Users, projects and role assignments in the database; argon2-hashed passwords."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.orm import Session

from coriolis import exceptions
from coriolis.db import models
from coriolis.db.session import Database

_hasher = PasswordHasher()


def get_or_create_project(session: Session, name: str) -> models.Project:
    project = session.scalar(select(models.Project).where(models.Project.name == name))
    if project is None:
        project = models.Project(name=name)
        session.add(project)
        session.flush()
    return project


def create_user(session: Session, name: str, password: str, project: str,
                roles: list[str]) -> models.User:
    if session.scalar(select(models.User).where(models.User.name == name)) is not None:
        raise exceptions.Conflict(f"user '{name}' already exists")
    user = models.User(name=name, password_hash=_hasher.hash(password))
    session.add(user)
    session.flush()
    assign(session, user, get_or_create_project(session, project), roles)
    return user


def assign(session: Session, user: models.User, project: models.Project,
           roles: list[str]) -> None:
    for role in roles:
        if session.get(models.RoleAssignment, (user.id, project.id, role)) is None:
            session.add(models.RoleAssignment(user_id=user.id, project_id=project.id, role=role))


def authenticate(session: Session, *, password: str, name: str | None = None,
                 user_id: str | None = None) -> models.User:
    query = select(models.User)
    query = query.where(models.User.id == user_id) if user_id else query.where(
        models.User.name == name)
    user = session.scalar(query)
    try:
        if user is None or not user.enabled:
            raise VerifyMismatchError
        _hasher.verify(user.password_hash, password)
    except VerifyMismatchError:
        raise exceptions.Unauthorized("The request you have made requires authentication.") \
            from None
    return user


def find_user(session: Session, name: str) -> models.User:
    user = session.scalar(select(models.User).where(models.User.name == name))
    if user is None:
        raise exceptions.NotFound(f"user '{name}' not found")
    return user


def revoke_tokens(user: models.User) -> None:
    """Every token the user holds stops working."""
    user.tokens_valid_after = time.time()


def set_password(session: Session, name: str, password: str) -> None:
    user = find_user(session, name)
    user.password_hash = _hasher.hash(password)
    revoke_tokens(user)


def set_enabled(session: Session, name: str, enabled: bool) -> None:
    user = find_user(session, name)
    user.enabled = enabled
    revoke_tokens(user)


def delete_user(session: Session, name: str) -> None:
    session.delete(find_user(session, name))


def unassign(session: Session, user_name: str, project_name: str, role: str) -> None:
    user = find_user(session, user_name)
    project = find_project(session, name=project_name)
    row = session.get(models.RoleAssignment, (user.id, project.id, role))
    if row is None:
        raise exceptions.NotFound(
            f"user '{user_name}' has no role '{role}' in project '{project_name}'")
    session.delete(row)
    revoke_tokens(user)


def assignments(session: Session) -> list[tuple[str, str, str]]:
    """(user, project, role) of every role assignment."""
    rows = session.execute(
        select(models.User.name, models.Project.name, models.RoleAssignment.role)
        .join(models.RoleAssignment, models.RoleAssignment.user_id == models.User.id)
        .join(models.Project, models.Project.id == models.RoleAssignment.project_id)
        .order_by(models.User.name, models.Project.name, models.RoleAssignment.role))
    return [(u, p, r) for u, p, r in rows]


def roles_in(session: Session, user: models.User, project: models.Project) -> list[str]:
    return sorted(session.scalars(select(models.RoleAssignment.role).where(
        models.RoleAssignment.user_id == user.id,
        models.RoleAssignment.project_id == project.id)))


def find_project(session: Session, *, project_id: str | None = None,
                 name: str | None = None) -> models.Project:
    project = session.get(models.Project, project_id) if project_id else session.scalar(
        select(models.Project).where(models.Project.name == name))
    if project is None:
        raise exceptions.NotFound(f"project '{project_id or name}' not found")
    return project


def bootstrap(db: Database, password_file: Path, username: str = "admin",
              project: str = "admin") -> str:
    """Create the admin user and project on first start (password kept, mode 0600, in
    ``password_file``); return the admin's password."""
    with db.session() as session:
        if session.scalar(select(models.User).where(models.User.name == username)):
            return password_file.read_text().strip()
        password = secrets.token_urlsafe(18)
        create_user(session, username, password, project, ["admin", "member"])
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        return password
