"""The database: engines and URLs (``engine``), the schema (``models``) and its migrations (``schema``), the
SQLite write lock (``lock``) and the check-in's precompiled statements (``hot_sql``)."""

from exposure_guard_server.db.engine import (
    WRITE,
    DatabaseError,
    default_data_dir,
    default_db_url,
    is_sqlite,
    make_engine,
    normalise_url,
    safe_url,
)
from exposure_guard_server.db.schema import current_revision, head_revision, migrate, require_current

__all__ = ["WRITE", "DatabaseError", "current_revision", "default_data_dir", "default_db_url", "head_revision",
           "is_sqlite", "make_engine", "migrate", "normalise_url", "require_current", "safe_url"]
