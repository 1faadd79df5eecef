"""The schema of the first releases with the web app and the REST API (before API keys expired):
users, API keys, settings, the audit trail and events, with the audit tables append-only.

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: Frozen copy of the tables protected at this revision (later revisions change their own copy).
APPEND_ONLY = ("audit_studies", "audit_images", "feedback", "events")


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), primary_key=True)


def _now(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(), nullable=nullable)  # naive UTC (store.db.UTCDateTime)


def upgrade() -> None:
    """Create the tables, their indexes and the append-only triggers."""
    op.create_table("events", _id(), _now("created_at"), sa.Column("actor", sa.String(64), nullable=False),
                    sa.Column("action", sa.String(64), nullable=False), sa.Column("detail", sa.Text(), nullable=False))
    op.create_index("ix_events_created_at", "events", ["created_at"])
    op.create_table("settings", sa.Column("key", sa.String(128), primary_key=True),
                    sa.Column("value", sa.Text(), nullable=False), _now("updated_at"),
                    sa.Column("updated_by", sa.String(64), nullable=False))
    op.create_table("users", _id(), sa.Column("username", sa.String(64), nullable=False),
                    sa.Column("password_hash", sa.String(255), nullable=False),
                    sa.Column("role", sa.String(16), nullable=False), sa.Column("active", sa.Boolean(), nullable=False),
                    sa.Column("must_change_password", sa.Boolean(), nullable=False),
                    sa.Column("failed_logins", sa.Integer(), nullable=False), _now("locked_until", True),
                    sa.Column("session_version", sa.Integer(), nullable=False), _now("created_at"))
    op.create_index("ix_users_username", "users", ["username"], unique=True)
    op.create_table("api_keys", _id(), sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
                    sa.Column("name", sa.String(64), nullable=False), sa.Column("prefix", sa.String(16), nullable=False),
                    sa.Column("key_sha256", sa.String(64), nullable=False), _now("created_at"),
                    _now("revoked_at", True), _now("last_used_at", True))
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_index("ix_api_keys_key_sha256", "api_keys", ["key_sha256"], unique=True)
    op.create_table("audit_studies", _id(), _now("created_at"),
                    sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
                    sa.Column("username", sa.String(64), nullable=False),
                    sa.Column("model_id", sa.String(255), nullable=False),
                    sa.Column("model_version", sa.String(255), nullable=False),
                    sa.Column("model_sha256", sa.String(64), nullable=False),
                    sa.Column("synthetic_model", sa.Boolean(), nullable=False),
                    sa.Column("threshold", sa.Float(), nullable=False), sa.Column("n_images", sa.Integer(), nullable=False),
                    sa.Column("study_probability", sa.Float(), nullable=False),
                    sa.Column("abnormal", sa.Boolean(), nullable=False))
    op.create_index("ix_audit_studies_created_at", "audit_studies", ["created_at"])
    op.create_table("audit_images", _id(),
                    sa.Column("study_id", sa.Integer(), sa.ForeignKey("audit_studies.id"), nullable=False),
                    sa.Column("position", sa.Integer(), nullable=False), sa.Column("sha256", sa.String(64), nullable=False),
                    sa.Column("file_type", sa.String(16), nullable=False), sa.Column("dicom_info", sa.Text(), nullable=True),
                    sa.Column("probability", sa.Float(), nullable=False), sa.Column("abnormal", sa.Boolean(), nullable=False),
                    sa.Column("pixels_png", sa.LargeBinary(), nullable=True))
    op.create_index("ix_audit_images_study_id", "audit_images", ["study_id"])
    op.create_index("ix_audit_images_sha256", "audit_images", ["sha256"])
    op.create_table("feedback", _id(),
                    sa.Column("study_id", sa.Integer(), sa.ForeignKey("audit_studies.id"), nullable=False), _now("created_at"),
                    sa.Column("user_id", sa.Integer(), sa.ForeignKey("users.id"), nullable=False),
                    sa.Column("username", sa.String(64), nullable=False), sa.Column("agrees", sa.Boolean(), nullable=False),
                    sa.Column("note", sa.Text(), nullable=False))
    op.create_index("ix_feedback_study_id", "feedback", ["study_id"])
    _append_only_triggers()


def _append_only_triggers() -> None:
    """The database refuses UPDATE and DELETE of audit rows (and TRUNCATE on PostgreSQL)."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION fracturescan_append_only() RETURNS trigger AS $$ "
                   "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END; $$ LANGUAGE plpgsql")
        for table in APPEND_ONLY:
            op.execute(f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION fracturescan_append_only()")
            op.execute(f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION fracturescan_append_only()")
    elif op.get_bind().dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for change in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{change.lower()} BEFORE {change} ON {table} "
                           f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")


def downgrade() -> None:
    """Not supported: the audit trail is never dropped by a migration; restore a backup instead."""
    raise NotImplementedError("fracturescan never drops the audit trail; restore a backup instead")
