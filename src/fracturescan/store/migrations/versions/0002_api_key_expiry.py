"""API keys expire: ``api_keys.expires_at`` (NULL: never; keys made before this revision keep
working until an admin sets an end by revoking and re-creating them).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable expiry column (existing keys: NULL, i.e. no expiry, as before)."""
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    """Not supported: restore a backup instead."""
    raise NotImplementedError("restore a backup taken before the upgrade instead")
