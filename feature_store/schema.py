"""Schema versions and forward migrations.

The schema lives in ``feature_store/sql/NNN_name.sql`` files; ``NNN`` is the
version a file brings the store to. ``schema_version`` records every applied
file. Opening a store applies the missing files in order, each in its own
transaction, so a store is always at one well-defined version.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources

import duckdb

from feature_store.errors import StoreError, StoreVersionError
from feature_store.sqlutil import fetch_one

logger = logging.getLogger(__name__)

_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One schema file: the version it brings the store to, and its SQL."""

    version: int
    name: str
    sql: str

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ValueError(f"migration versions start at 1, got {self.version}")


def _sql_text(filename: str) -> str:
    return (resources.files("feature_store") / "sql" / filename).read_text(encoding="utf-8")


@functools.cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in (resources.files("feature_store") / "sql").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"feature_store/sql migrations must be numbered 1..n, got {versions}")
    return tuple(found)


def latest_version() -> int:
    """The schema version this library writes."""
    return migrations()[-1].version


def _user_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
    ).fetchall()
    return [r[0] for r in rows]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version; 0 for an empty database.

    Raises StoreError for a DuckDB database that is not a feature store.
    """
    tables = _user_tables(con)
    if "schema_version" not in tables:
        if tables:
            raise StoreError(
                f"this DuckDB database is not a feature store (it has tables {sorted(tables)} "
                "but no schema_version table)"
            )
        return 0
    row = fetch_one(con, "SELECT coalesce(max(version), 0) FROM schema_version")
    return int(row[0])


def check_version(version: int, *, writable: bool) -> None:
    """Refuse stores from a newer library, and old stores that cannot be migrated."""
    latest = latest_version()
    if version > latest:
        raise StoreVersionError(
            f"store schema version {version} is newer than this library's ({latest}); "
            "upgrade sarm-dashboard to read it"
        )
    if version < latest and not writable:
        raise StoreVersionError(
            f"store schema version {version} is older than this library's ({latest}); "
            "open it once without read_only=True to migrate it",
            older=True,
        )


def migrate(con: duckdb.DuckDBPyConnection, target: int | None = None) -> list[int]:
    """Apply the missing migrations up to ``target`` (default: latest); return those applied."""
    target = latest_version() if target is None else target
    if not 0 <= target <= latest_version():
        raise ValueError(f"target schema version must be in 0..{latest_version()}, got {target}")
    version = current_version(con)
    check_version(version, writable=True)
    applied = []
    for migration in migrations():
        if version < migration.version <= target:
            _apply(con, migration)
            applied.append(migration.version)
    return applied


def _apply(con: duckdb.DuckDBPyConnection, migration: Migration) -> None:
    logger.info("applying feature store migration %03d_%s", migration.version, migration.name)
    con.begin()
    try:
        con.execute(_sql_text("schema_version.sql"))
        con.execute(migration.sql)
        con.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)",
            [migration.version, migration.name, _utcnow()],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
