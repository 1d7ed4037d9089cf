"""auto deploy: executions and schedules that deploy their transfer once completed

Revision ID: a7d3e5f1c2b4
Revises: f22d5537b50d
Create Date: 2026-11-30 20:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = 'a7d3e5f1c2b4'
down_revision = 'f22d5537b50d'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('executions', 'replica_schedules'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('auto_deploy', sa.Boolean(), nullable=False,
                                          server_default=sa.false()))


def downgrade() -> None:
    for table in ('executions', 'replica_schedules'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('auto_deploy')
