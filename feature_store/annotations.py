"""Annotations (labels, head versions) in a SQLite database beside the DuckDB store.

DuckDB lets one process write a file *or* many processes read it. The
analytic store (examples, latents, statistics) is therefore only read once
built (``sarm index`` builds a new file and renames it into place), while the
annotations people write from the dashboard, the CLI and scripts at the same
time live here: ``store.duckdb`` has ``store.annotations.sqlite`` beside it, in
WAL mode (readers never wait for a writer), each write one ``BEGIN IMMEDIATE``
transaction that waits up to :data:`BUSY_TIMEOUT_S` for other writers.

Every thread gets its own SQLite connection. Every ``sqlite3.Error`` leaves
this module as a :class:`~feature_store.errors.StoreError` naming the file.
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pyarrow as pa

from feature_store.errors import (
    HeadVersionError,
    StoreBusyError,
    StoreError,
    StoreReadOnlyError,
    StoreVersionError,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: explanations (a v1 file gains the table on its next writable open)
BUSY_TIMEOUT_S = 60.0
SUFFIX = ".annotations.sqlite"
LEGACY_IMPORT = "duckdb-store-tables"  # the ``imports`` row of the one-time import

LABEL_COLUMNS = ("label_id", "feature_id", "label", "description", "author", "source", "created_at")
EXPLANATION_COLUMNS = (
    "explanation_id",
    "feature_id",
    "text",
    "source",
    "version",
    "score",
    "monosemanticity",
    "evidence_hash",
    "details",
    "created_at",
)
#: values kept inside an explanation's ``details`` JSON, readable as columns of
#: :meth:`Annotations.latest_explanations` (SQLite's JSON functions)
EXPLANATION_DETAILS = {
    "fuzzing": "json_extract(details, '$.scores.fuzzing')",
    "ceiling": "json_extract(details, '$.scores.ceiling')",
}
HEAD_COLUMNS = ("name", "parent", "note", "author", "metrics", "bias", "weights", "created_at")
LATEST_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("label", pa.string()),
        ("description", pa.string()),
        ("author", pa.string()),
        ("source", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("label_id", pa.int64()),
    ]
)

#: ``(label rows, head rows)`` of a store that kept them in DuckDB, in
#: ``LABEL_COLUMNS[1:]`` / ``HEAD_COLUMNS`` order, oldest first
LegacyRows = tuple[Sequence[tuple], Sequence[tuple]]

_memory_names = itertools.count()


def annotations_path(store_path: str | Path) -> Path:
    """``dir/name.annotations.sqlite`` for the store ``dir/name.duckdb``."""
    store_path = Path(store_path)
    name = store_path.name.removesuffix(".duckdb")
    return store_path.with_name(name + SUFFIX)


def _can_write(path: Path) -> bool:
    """Writable, and not marked read-only (no write bit: read-only even for root)."""
    return os.access(path, os.W_OK) and bool(path.stat().st_mode & 0o222)


def read_only_reason(store_path: Path, path: Path) -> str | None:
    """Why annotations of ``store_path`` cannot be written (None when they can)."""
    if store_path.exists() and not _can_write(store_path):
        return f"the store file {store_path} is read-only (no write permission)"
    if path.exists() and not _can_write(path):
        return f"the annotations database {path} is read-only (no write permission)"
    if not os.access(path.parent, os.W_OK):
        return (
            f"the folder {path.parent} is not writable (the annotations database {path.name} "
            "and its -wal/-shm files live there)"
        )
    return None


def _schema_sql() -> str:
    return (resources.files("feature_store") / "sql" / "annotations.sql").read_text("utf-8")


def _text_time(value: datetime | str) -> str:
    return value if isinstance(value, str) else value.isoformat(sep=" ")


def _frame(rows: Sequence[tuple], columns: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(columns))
    frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601")
    return frame


class Annotations:
    """The labels and head versions of one store. Create with :meth:`open`."""

    def __init__(self, path: Path, reason: str | None) -> None:
        self.path = path
        #: why nothing can be written (None: writable)
        self.reason = reason
        self._uri: str | None = None  # read-only or in-memory databases are opened by URI
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._latest: tuple[int, pa.Table] | None = None

    @classmethod
    def open(
        cls, path: str | Path, *, reason: str | None, legacy: Callable[[], LegacyRows]
    ) -> Annotations:
        """Open (creating it when writable) the database at ``path``.

        ``reason`` says why it must not be written (None: it may be). Labels and
        head versions an older store kept in its DuckDB tables (``legacy()``)
        are copied in once. A read-only database that does not exist yet is
        held in memory with those copies, so they still show.
        """
        ann = cls(Path(path), reason)
        try:
            if reason is None:
                ann._create(legacy)
            elif ann.path.exists() and ann._open_existing_read_only():
                pass
            else:
                ann._uri = f"file:sarm-annotations-{next(_memory_names)}?mode=memory&cache=shared"
                ann.reason = None  # only while filling the in-memory copy
                try:
                    ann._create(legacy)  # kept alive by the connection _create leaves open
                finally:
                    ann.reason = reason
        except sqlite3.Error as exc:
            ann.close()
            raise _wrap(exc, "opening", ann.path) from exc
        except BaseException:
            ann.close()
            raise
        return ann

    @property
    def writable(self) -> bool:
        return self.reason is None

    def close(self) -> None:
        with self._lock:
            for con in self._connections:
                con.close()
            self._connections.clear()
            self._local = threading.local()

    # --------------------------------------------------------------- connections
    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            target, uri = (self._uri, True) if self._uri else (str(self.path), False)
            con = sqlite3.connect(
                target,
                timeout=BUSY_TIMEOUT_S,
                isolation_level=None,  # autocommit; writes open their own transaction
                check_same_thread=False,  # one per thread; close() may run on another thread
                uri=uri,
            )
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if self.writable:
                con.execute("PRAGMA synchronous = FULL")  # a committed label survives power loss
            with self._lock:
                self._connections.append(con)
            self._local.con = con
        return con

    def _create(self, legacy: Callable[[], LegacyRows]) -> None:
        con = self._connect()
        if self._uri is None:
            mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("annotations database %s runs in %s mode, not WAL", self.path, mode)
        self._check_version(con)
        con.executescript(
            f"BEGIN IMMEDIATE;\n{_schema_sql()}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
        )
        self._import_legacy(legacy)

    def _open_existing_read_only(self) -> bool:
        """Read an existing file without writing it; False when it holds no annotations yet."""
        for flags in ("mode=ro", "mode=ro&immutable=1"):  # immutable: no -shm can be created
            self._uri = f"file:{quote(str(self.path))}?{flags}"
            try:
                version = self._check_version(self._connect())
                if version:
                    return True
            except sqlite3.OperationalError:
                logger.debug("opening %s with %s failed", self.path, flags, exc_info=True)
            self.close()
        return False

    def _check_version(self, con: sqlite3.Connection) -> int:
        version = int(con.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreVersionError(
                f"annotations database {self.path} has schema version {version}, newer than "
                f"this library's ({SCHEMA_VERSION}); upgrade sarm-dashboard to read it"
            )
        return version

    def _import_legacy(self, legacy: Callable[[], LegacyRows]) -> None:
        if self._rows("SELECT 1 FROM imports WHERE source = ?", [LEGACY_IMPORT]):
            return
        labels, heads = legacy()
        with self._write("importing the store's labels and head versions") as con:
            if con.execute("SELECT 1 FROM imports WHERE source = ?", [LEGACY_IMPORT]).fetchall():
                return  # another process imported them first
            con.executemany(
                """INSERT INTO labels (feature_id, label, description, author, source, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [(*row[:5], _text_time(row[5])) for row in labels],
            )
            con.executemany(
                "INSERT OR IGNORE INTO head_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row[:7], _text_time(row[7])) for row in heads],
            )
            con.execute(
                "INSERT INTO imports VALUES (?, ?, ?, ?)",
                [LEGACY_IMPORT, len(labels), len(heads), _text_time(datetime.now())],
            )
        if labels or heads:
            logger.info(
                "copied %d label versions and %d head versions into %s",
                len(labels),
                len(heads),
                self.path,
            )

    # ---------------------------------------------------------- reads, writes
    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        try:
            return self._connect().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _wrap(exc, "reading", self.path) from exc

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One transaction holding SQLite's write lock (waits for other writers)."""
        if self.reason is not None:
            raise StoreReadOnlyError(f"{what}: annotations cannot be saved because {self.reason}")
        try:
            con = self._connect()
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        except sqlite3.Error as exc:
            raise _wrap(exc, what, self.path) from exc

    # ------------------------------------------------------------------ labels
    def add_label(self, row: Sequence[object], created_at: datetime) -> int:
        """Append ``(feature_id, label, description, author, source)``; its ``label_id``."""
        with self._write(f"labelling feature {row[0]}") as con:
            cur = con.execute(
                """INSERT INTO labels (feature_id, label, description, author, source, created_at)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                [*row, _text_time(created_at)],
            )
            return int(cur.lastrowid)

    def label_history(self, feature_id: int) -> pd.DataFrame:
        rows = self._rows(
            f"SELECT {', '.join(LABEL_COLUMNS)} FROM labels "
            "WHERE feature_id = ? ORDER BY label_id DESC",
            [feature_id],
        )
        return _frame(rows, LABEL_COLUMNS)

    def all_labels(self) -> pd.DataFrame:
        """Every label version, oldest first."""
        rows = self._rows(f"SELECT {', '.join(LABEL_COLUMNS)} FROM labels ORDER BY label_id")
        return _frame(rows, LABEL_COLUMNS)

    def label_revision(self) -> int:
        """The newest ``label_id`` (0 without labels); labels are append-only."""
        return int(self._rows("SELECT coalesce(max(label_id), 0) FROM labels")[0][0])

    def latest_labels(self) -> pa.Table:
        """The newest version of every feature's label (``LATEST_SCHEMA``), cached per revision."""
        revision = self.label_revision()
        cached = self._latest
        if cached is not None and cached[0] == revision:
            return cached[1]
        rows = self._rows(
            """SELECT feature_id, label, description, author, source, created_at, label_id
               FROM labels WHERE label_id IN (SELECT max(label_id) FROM labels GROUP BY feature_id)
               ORDER BY feature_id"""
        )
        frame = _frame(rows, LATEST_SCHEMA.names)
        table = pa.Table.from_pandas(frame, schema=LATEST_SCHEMA, preserve_index=False)
        newest = max((int(r[-1]) for r in rows), default=0)
        self._latest = (newest, table)
        return table

    # ------------------------------------------------------------ explanations
    def add_explanations(self, rows: Sequence[Sequence[object]], created_at: datetime) -> int:
        """Append ``EXPLANATION_COLUMNS[1:-1]`` rows in one transaction; how many."""
        with self._write(f"saving {len(rows)} feature explanations") as con:
            con.executemany(
                f"INSERT INTO explanations ({', '.join(EXPLANATION_COLUMNS[1:])}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(*row, _text_time(created_at)) for row in rows],
            )
        return len(rows)

    def explanation_rows(self, feature_id: int | None = None) -> pd.DataFrame:
        """Every explanation version (of ``feature_id``), newest first; empty for a v1 file."""
        if not self._rows(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'explanations'"
        ):
            return _frame([], EXPLANATION_COLUMNS)
        where, params = (
            ("WHERE feature_id = ? ", [feature_id]) if feature_id is not None else ("", [])
        )
        rows = self._rows(
            f"SELECT {', '.join(EXPLANATION_COLUMNS)} FROM explanations {where}"
            "ORDER BY explanation_id DESC",
            params,
        )
        return _frame(rows, EXPLANATION_COLUMNS)

    def latest_explanations(self, columns: Sequence[str] = EXPLANATION_COLUMNS) -> pd.DataFrame:
        """``columns`` of the newest explanation per feature and source, ordered by feature
        and source (picked in SQL; the app reads only what it shows). A column may also be
        one of :data:`EXPLANATION_DETAILS` (read out of the ``details`` JSON)."""
        columns = list(columns)
        unknown = [c for c in columns if c not in EXPLANATION_COLUMNS + tuple(EXPLANATION_DETAILS)]
        if unknown:
            raise ValueError(f"explanations have no columns {unknown}")
        selected = [
            f"{EXPLANATION_DETAILS[c]} AS {c}" if c in EXPLANATION_DETAILS else c for c in columns
        ]
        if not self._rows(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'explanations'"
        ):
            rows: list[tuple] = []
        else:
            rows = self._rows(
                f"""SELECT {", ".join(selected)} FROM (
                       SELECT *, row_number() OVER (PARTITION BY feature_id, source
                                                    ORDER BY explanation_id DESC) AS newest
                       FROM explanations)
                   WHERE newest = 1 ORDER BY feature_id, source"""
            )
        return (
            _frame(rows, columns)
            if "created_at" in columns
            else pd.DataFrame(rows, columns=columns)
        )

    # ------------------------------------------------------------ head versions
    def add_head(self, row: Sequence[object], reserved: frozenset[str]) -> None:
        """Insert ``HEAD_COLUMNS`` values; HeadVersionError if the name is taken (or in
        ``reserved``) or the parent does not exist."""
        name, parent = row[0], row[1]
        with self._write(f"saving head version {name!r}") as con:
            taken = {r[0] for r in con.execute("SELECT name FROM head_versions").fetchall()}
            taken |= reserved
            if name in taken:
                raise HeadVersionError(
                    f"head version {name!r} already exists; versions are immutable, pick a new name"
                )
            if parent is not None and parent not in taken:
                raise HeadVersionError(f"parent head version {parent!r} does not exist")
            con.execute(
                "INSERT INTO head_versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [*row[:7], _text_time(row[7])],
            )

    def head_rows(self, name: str | None = None) -> list[tuple]:
        """``HEAD_COLUMNS`` of every saved version (or of ``name``), oldest first."""
        sql = f"SELECT {', '.join(HEAD_COLUMNS)} FROM head_versions"
        if name is None:
            return self._rows(sql + " ORDER BY created_at, name")
        return self._rows(sql + " WHERE name = ?", [name])

    def n_heads(self) -> int:
        return int(self._rows("SELECT count(*) FROM head_versions")[0][0])


def _wrap(exc: sqlite3.Error, what: str, path: Path) -> StoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text.lower():
        return StoreBusyError(
            f"{what}: annotations database {path} stayed locked by another writer for "
            f"{BUSY_TIMEOUT_S:.0f} s; try again ({text})"
        )
    return StoreError(f"{what} failed on annotations database {path}: {text}")


def _rollback(con: sqlite3.Connection) -> None:
    try:
        con.execute("ROLLBACK")
    except sqlite3.Error:
        logger.debug("rollback after a failed annotation write also failed", exc_info=True)
