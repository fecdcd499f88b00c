"""The :class:`Connection` to one store file: cursors, transactions, metadata.

One connection may be shared by many threads (Streamlit sessions): each thread
reads through its own cursor, and writes are serialised by a lock and run in a
transaction, so concurrent writers lose nothing and readers never see half a
write. Every ``duckdb.Error`` leaves this module as a :class:`StoreError`.

Labels and head versions are not in the DuckDB file: they live in the
:class:`~feature_store.annotations.Annotations` database beside it, which many
processes write at once, also while the DuckDB file is open read-only
(:attr:`Connection.annotations`, opened on first use).

The store's modules (ingest, statistics, queries, labels, heads, tokens) take a
:class:`Connection`; :class:`feature_store.store.FeatureStore` is the facade
that adds their functions as methods.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.compute as pc
from typing_extensions import Self

from feature_store.annotations import Annotations, LegacyRows, annotations_path, read_only_reason
from feature_store.errors import (
    StoreBusyError,
    StoreError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from feature_store.meta import MODEL_KEYS, put_meta
from feature_store.schema import check_version, current_version, migrate
from feature_store.sqlutil import fetch_one
from sarm.constants import INGEST_HEAD

logger = logging.getLogger(__name__)

#: DuckDB never installs or loads an extension on its own (no network, no foreign formats)
DUCKDB_CONFIG: dict[str, bool] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
}
_DUCKDB_MAGIC = (8, b"DUCK")  # offset and bytes of the DuckDB file signature
_KNOWN_FORMATS = {b"SQLite format 3\x00": "a SQLite database", b"PAR1": "a Parquet file"}


def wrap_duckdb_error(
    exc: duckdb.Error, what: str, path: Path, *, read_only: bool | None = None
) -> StoreError:
    """The store's own error for a DuckDB failure during ``what``."""
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and "lock" in text.lower():
        if read_only:
            advice = (
                "another process has it open for writing (an older sarm, or a script); "
                "DuckDB lets no reader in meanwhile: wait for it to finish"
            )
        else:
            advice = (
                "another process has it open; open it with read_only=True (labels and head "
                "versions are saved all the same), and rebuild it with `sarm index`, which "
                "writes a new file and renames it into place"
            )
        return StoreBusyError(f"{what}: feature store {path}: {advice} ({text})")
    return StoreError(f"{what} failed on feature store {path}: {text}")


class Connection:
    """An open store file. Create with :meth:`open` (the facade's ``FeatureStore.open``)."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        path: Path,
        read_only: bool,
        annotations: str | Path | None = None,
    ) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self._path = path
        self._read_only = read_only
        self._annotations_path = Path(annotations or annotations_path(path)).expanduser()
        self._annotations: Annotations | None = None
        self._lock = threading.RLock()
        self._local = threading.local()
        self._meta: dict[str, str] | None = None
        self._writes = 0  # bumped after every write, so a racing read never caches stale meta

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def open(
        cls, path: str | Path, *, read_only: bool = False, annotations: str | Path | None = None
    ) -> Self:
        """Open (creating or migrating it if needed) the store at ``path``.

        ``read_only=True`` never creates or migrates the DuckDB file, and lets
        several processes read it at once; labels and head versions can still be
        saved (they go to the annotations database, by default
        ``annotations_path(path)``; ``sarm index`` names the final store's while
        it builds a temporary file).
        """
        path = Path(path).expanduser()
        if path.is_dir():
            raise StoreError(f"feature store path {path} is a directory; give a .duckdb file path")
        if read_only and not path.exists():
            raise StoreNotFoundError(
                f"feature store {path} does not exist; build it with `sarm index`"
            )
        if path.exists():
            check_duckdb_file(path)
        elif not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con, read_only = _connect(path, read_only)
        except duckdb.Error as exc:
            raise wrap_duckdb_error(exc, "opening", path, read_only=read_only) from exc
        try:
            _prepare_schema(con, read_only)
        except duckdb.Error as exc:
            con.close()
            raise wrap_duckdb_error(exc, "reading the schema", path) from exc
        except BaseException:
            con.close()
            raise
        return cls(con, path, read_only, annotations)

    def close(self) -> None:
        """Close the store (and every thread's cursor). Safe to call twice."""
        with self._lock:
            if self._annotations is not None:
                self._annotations.close()
                self._annotations = None
            if self._con is not None:
                self._con.close()
                self._con = None
                self._meta = None  # a closed store answers nothing, not even from the cache

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "read-only" if self._read_only else "read-write"
        return f"{type(self).__name__}({str(self._path)!r}, {mode})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def read_only(self) -> bool:
        return self._read_only

    @property
    def closed(self) -> bool:
        return self._con is None

    # ------------------------------------------------------------- annotations
    @property
    def annotations(self) -> Annotations:
        """The labels and head versions database (opened, and created, on first use)."""
        if self._con is None:
            raise StoreError(f"feature store {self._path} is closed")
        with self._lock:
            if self._annotations is None:
                reason = read_only_reason(self._path, self._annotations_path)
                self._annotations = Annotations.open(
                    self._annotations_path, reason=reason, legacy=self._legacy_annotations
                )
            return self._annotations

    @property
    def can_annotate(self) -> bool:
        """Whether labels and head versions can be saved (see :attr:`annotation_note`)."""
        return self.annotations.writable

    @property
    def annotation_note(self) -> str | None:
        """Why labels and head versions cannot be saved, or None when they can."""
        reason = self.annotations.reason
        return None if reason is None else f"Labelling is disabled: {reason}."

    def _legacy_annotations(self) -> LegacyRows:
        """Labels and head versions kept in the DuckDB file (schema <= 4), oldest first."""
        with self.read("reading labels and head versions to import") as cur:
            labels = cur.execute(
                """SELECT feature_id, label, description, author, source, created_at
                   FROM labels ORDER BY label_id"""
            ).fetchall()
            heads = cur.execute(
                f"""SELECT name, parent, note, author, metrics, bias, weights, created_at
                    FROM head_versions WHERE name <> '{INGEST_HEAD}' ORDER BY created_at, name"""
            ).fetchall()
        return labels, [(*h[:6], np.asarray(h[6], "<f4").tobytes(), h[7]) for h in heads]

    @contextmanager
    def read_labels(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """:meth:`read`, with the latest labels registered as the view ``current_labels``."""
        latest = self.annotations.latest_labels()
        with self.read(what) as cur:
            registered = getattr(self._local, "labels", (None, None))
            if registered[0] is not cur or registered[1] is not latest:
                cur.register("current_labels", latest)  # an Arrow table: no copy
                self._local.labels = (cur, latest)
            yield cur

    # ------------------------------------------------------------ cursors, guards
    def _cursor(self) -> duckdb.DuckDBPyConnection:
        con = self._con
        if con is None:
            raise StoreError(f"feature store {self._path} is closed")
        cur = getattr(self._local, "cursor", None)
        if cur is None or getattr(self._local, "owner", None) is not con:
            cur = con.cursor()
            self._local.cursor, self._local.owner = cur, con
        return cur

    @contextmanager
    def read(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """This thread's cursor, with DuckDB errors turned into StoreError."""
        cur = self._cursor()
        try:
            yield cur
        except duckdb.Error as exc:
            raise wrap_duckdb_error(exc, what, self._path) from exc

    @contextmanager
    def write(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor inside one transaction, holding the store's write lock."""
        if self._read_only:
            raise StoreReadOnlyError(
                f"{what}: feature store {self._path} is open read-only (read_only=True, or "
                "this process had it open read-only already); its tables are rebuilt by "
                "`sarm index`, and labels and head versions can be saved all the same"
            )
        with self._lock:
            cur = self._cursor()
            try:
                cur.begin()
                try:
                    yield cur
                    cur.commit()
                except BaseException:
                    _rollback(cur)
                    raise
                finally:
                    self._writes += 1
                    self._meta = None
            except duckdb.Error as exc:
                raise wrap_duckdb_error(exc, what, self._path) from exc

    # -------------------------------------------------------------------- meta
    def meta(self) -> dict[str, str]:
        """Every metadata entry (model fingerprint, d_sae, data source, ...).

        Cached until this object's next write (no other process can write
        while this one has the file open).
        """
        cached, writes = self._meta, self._writes
        if cached is None:
            with self.read("reading metadata") as cur:
                cached = dict(cur.execute("SELECT key, value FROM meta ORDER BY key").fetchall())
            if writes == self._writes:
                self._meta = cached
        return dict(cached)

    def set_meta(self, values: Mapping[str, object]) -> None:
        """Insert or replace metadata entries in one transaction."""
        with self.write("writing metadata") as cur:
            put_meta(cur, values)

    def schema_version(self) -> int:
        with self.read("reading the schema version") as cur:
            return current_version(cur)

    @property
    def d_sae(self) -> int | None:
        """Number of SAE latents, once a model has been bound (else None)."""
        value = self.meta().get("d_sae")
        return int(value) if value is not None else None

    @property
    def error_feature(self) -> int | None:
        """The feature id of the SAE-error column (:mod:`sarm.residual`), or None."""
        value = self.meta().get("error_feature")
        return int(value) if value else None

    def fingerprint(self) -> dict[str, str] | None:
        """The model fingerprint the store was built with (None while empty)."""
        meta = self.meta()
        if "backbone" not in meta:
            return None
        return {key: meta[key] for key in (*MODEL_KEYS, "head")}

    def check_model(self, fingerprint: Mapping[str, str]) -> None:
        """Raise StoreMismatchError unless ``fingerprint`` is the store's backbone/layer/SAE.

        A different head only triggers a warning: stored latents stay valid and
        rewards can be recomputed from them under any head.
        """
        stored = self.fingerprint()
        if stored is None:
            return
        diffs = [k for k in MODEL_KEYS if str(fingerprint.get(k)) != stored[k]]
        if diffs:
            detail = ", ".join(
                f"{k}: store {stored[k]!r} vs model {fingerprint.get(k)!r}" for k in diffs
            )
            raise StoreMismatchError(
                f"feature store {self._path} was built with a different model ({detail}); "
                "use a new store path for this model"
            )
        if str(fingerprint.get("head")) != stored["head"]:
            warnings.warn(
                f"feature store {self._path} was built with head {stored['head']}, the model's "
                f"head is {fingerprint.get('head')}; stored rewards use the store's head",
                stacklevel=2,
            )

    def size_bytes(self) -> int:
        """Bytes on disk (database file plus write-ahead log)."""
        wal = self._path.with_name(self._path.name + ".wal")
        return sum(p.stat().st_size for p in (self._path, wal) if p.exists())

    def summary(self) -> dict[str, Any]:
        """Counts, model fingerprint and size, for status lines and the app's header."""
        with self.read("summarising") as cur:
            n_examples, n_latents = fetch_one(
                cur, "SELECT (SELECT count(*) FROM examples), (SELECT count(*) FROM latents)"
            )
        latest = self.annotations.latest_labels()
        n_labelled = pc.sum(pc.not_equal(latest["label"], "")).as_py() or 0
        meta = self.meta()
        size = self.size_bytes()
        return {
            "path": str(self._path),
            "schema_version": self.schema_version(),
            "n_examples": int(n_examples),
            "n_latents": int(n_latents),
            "n_labelled_features": int(n_labelled),
            "d_sae": int(meta["d_sae"]) if "d_sae" in meta else None,
            "fingerprint": self.fingerprint(),
            "complete": meta.get("complete") == "true",
            "source": meta.get("source"),
            "size_bytes": size,
            "bytes_per_1000_examples": size * 1000 / n_examples if n_examples else None,
        }

    def checkpoint(self) -> None:
        """Fold the write-ahead log into the database file."""
        if self._read_only:
            return
        try:
            with self._lock, self.read("checkpointing") as cur:
                cur.execute("CHECKPOINT")
        except StoreError as exc:  # an optimisation only: the WAL is folded in on close
            logger.warning("%s", exc)


def _connect(path: Path, read_only: bool) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A DuckDB connection, and whether this store must treat it as read-only.

    DuckDB refuses a second connection of one process in the other mode. When
    this process has the file open already (a dashboard reading it, a script
    writing it), share that one, read-only for this store: a file open
    read-only is at the latest schema, and labels and head versions can be
    saved all the same.
    """
    try:
        return duckdb.connect(str(path), read_only=read_only, config=DUCKDB_CONFIG), read_only
    except duckdb.ConnectionException as exc:
        if "different configuration" not in str(exc):
            raise
        logger.info("feature store %s is open in this process already; sharing it read-only", path)
        return duckdb.connect(str(path), read_only=not read_only, config=DUCKDB_CONFIG), True


def check_duckdb_file(path: Path) -> None:
    """Raise StoreError unless ``path`` starts with the DuckDB file signature.

    Checked before DuckDB sees the file, so a foreign file (a SQLite database
    renamed ``.duckdb``, say) never makes DuckDB look for an extension to read it.
    """
    offset, magic = _DUCKDB_MAGIC
    try:
        with path.open("rb") as fh:
            head = fh.read(16)  # the longest signature we know
    except OSError as exc:
        raise StoreError(f"cannot read feature store {path}: {exc}") from exc
    if head[offset : offset + len(magic)] == magic:
        return
    kind = next((name for sig, name in _KNOWN_FORMATS.items() if head.startswith(sig)), None)
    found = "it is empty" if not head else f"it looks like {kind}" if kind else "unknown format"
    raise StoreError(
        f"{path} is not a DuckDB file ({found}); give the path of a feature store built by "
        "`sarm index`, or a new path to create one"
    )


def _prepare_schema(con: duckdb.DuckDBPyConnection, read_only: bool) -> None:
    if read_only:
        check_version(current_version(con), writable=False)
    else:
        migrate(con)


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    try:
        cur.rollback()
    except duckdb.Error:
        logger.debug("rollback after a failed write also failed", exc_info=True)
