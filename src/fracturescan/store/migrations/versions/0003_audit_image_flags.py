"""Audited images keep their flags: ``audit_images.guard_flags``, a JSON list of the reasons the
DICOM header check or the input guard gave ("[]": none), so monitoring can count flagged images.
Rows written before this revision keep NULL (not recorded), and are counted as not flagged.

Adding a nullable column updates no row, so the append-only triggers do not fire and stay.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable flags column (existing rows: NULL)."""
    op.add_column("audit_images", sa.Column("guard_flags", sa.Text(), nullable=True))


def downgrade() -> None:
    """Not supported: restore a backup instead."""
    raise NotImplementedError("restore a backup taken before the upgrade instead")
