"""Where the database is -- apart from db.session so that asking costs no SQLAlchemy import (`glo status`)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "glo.db"


def resolve_db_path(path: str | os.PathLike[str] | None) -> Path:
    """--db PATH, else $GLO_DB, else ./glo.db."""
    return Path(path or os.environ.get("GLO_DB") or DEFAULT_DB)
