"""Schema upgrades with Alembic, run programmatically (no alembic.ini needed).

To add a revision after changing the models:
    .venv/bin/python -m coriolis.db.migration revision "what changed"
"""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from coriolis.db.session import Database

SCRIPT_LOCATION = str(Path(__file__).parent / "alembic")


def _config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.set_main_option("sqlalchemy.url", db.url.replace("%", "%%"))
    cfg.attributes["engine"] = db.engine
    return cfg


def upgrade(db: Database, revision: str = "head") -> None:
    command.upgrade(_config(db), revision)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "revision":
        raise SystemExit('usage: python -m coriolis.db.migration revision "message"')
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{tmp}/schema.db")
        upgrade(db)
        command.revision(_config(db), message=args[1], autogenerate=True)


if __name__ == "__main__":
    main()
