"""Alembic environment: uses the engine handed over by coriolis.db.migration."""

from alembic import context

from coriolis.db import models

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=models.Base.metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
