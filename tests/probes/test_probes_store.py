"""Issue 10 probes of the feature store: unfinished ingests, foreign files, tampered shard parts.

Each probe failed (a silent wrong result or an unclear error) before the fix:
- an ingest whose statistics refresh fails midway left ``complete=true`` and 0
  rows in ``feature_stats``; such a store is now never marked complete, is
  finished when opened read-write and refused, saying how to finish it, read-only;
- a SQLite (or random, or empty) file named ``.duckdb`` made DuckDB try to
  download an extension; it is now a StoreError before DuckDB sees the file;
- shard merge trusted its parts; a part whose rewards, activations, ids, schema
  or fingerprint disagree with the manifest is now refused, naming the file,
  and nothing is written.
"""

from __future__ import annotations

import os
import sqlite3

import duckdb
import pandas as pd
import pytest

import feature_store as fs
from feature_store import stats
from feature_store.synthetic import SyntheticSpec, build_synthetic_store

SPEC = SyntheticSpec(n_pairs=12, d_sae=32, nnz=4, seed=3, chunk_size=5)
STAT_TABLES = {
    "feature_stats": "feature_id",
    "feature_histograms": "feature_id, bin",
    "feature_examples": "feature_id, band, rank",
}


def raw(path, sql: str, *, write: bool = False) -> list[tuple]:
    """Run ``sql`` on the store file with plain DuckDB (not through the store's code)."""
    with duckdb.connect(str(path), read_only=not write) as con:
        return con.execute(sql).fetchall()


def stat_tables(path) -> dict[str, pd.DataFrame]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {
            t: con.execute(f"SELECT * FROM {t} ORDER BY {o}").df() for t, o in STAT_TABLES.items()
        }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A synthetic store whose ingest finished normally."""
    path = tmp_path_factory.mktemp("reference") / "reference.duckdb"
    build_synthetic_store(path, SPEC).close()
    return path


# ------------------------------------------------------------- 1. unfinished ingest
def test_failed_stats_refresh_leaves_store_not_complete(reference, tmp_path, monkeypatch):
    """Statistics fail after feature_stats was filled (a faulty histogram step, as on a full disk)."""
    path = tmp_path / "crashed.duckdb"
    monkeypatch.setattr(stats, "HISTOGRAM_SQL", "INSERT INTO feature_histograms SELECT * FROM gone")
    with pytest.raises(fs.StoreError, match="gone"):
        build_synthetic_store(path, SPEC)
    monkeypatch.undo()
    assert raw(path, "SELECT count(*) FROM ingest_chunks")[0][0] == 5  # every chunk is stored
    assert raw(path, "SELECT value FROM meta WHERE key = 'complete'") == [("false",)]
    assert raw(path, "SELECT count(*) FROM feature_stats") == [(0,)]

    with pytest.raises(fs.StoreError, match=r"statistics missing \(0 of 32 features\).*sarm index"):
        fs.FeatureStore.open(path, read_only=True)
    with fs.FeatureStore.open(path) as store:  # read-write: finished on open
        summary = store.summary()
    assert summary["complete"] and summary["status"] == "complete"
    for name, frame in stat_tables(path).items():
        pd.testing.assert_frame_equal(frame, stat_tables(reference)[name], obj=name)


BREAKAGES = {
    # what the unfixed `finish` left behind: complete=true, statistics empty
    "complete-without-stats": [
        "DELETE FROM feature_stats",
        "DELETE FROM feature_histograms",
        "DELETE FROM feature_examples",
    ],
    "complete-flag-missing": ["DELETE FROM meta WHERE key = 'complete'"],
    "half-the-stats": ["DELETE FROM feature_stats WHERE feature_id % 2 = 0"],
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_unfinished_store_refused_read_only_and_finished_read_write(reference, tmp_path, breakage):
    path = tmp_path / "broken.duckdb"
    path.write_bytes(reference.read_bytes())
    for sql in BREAKAGES[breakage]:
        raw(path, sql, write=True)
    with pytest.raises(fs.StoreError, match=rf"{path.name}: .*run `sarm index --store"):
        fs.FeatureStore.open(path, read_only=True)
    with fs.FeatureStore.open(path) as store:
        assert store.summary()["complete"]
        assert store.summary()["status_message"] == ""
    with fs.FeatureStore.open(path, read_only=True) as store:
        assert store.summary()["complete"]
    for name, frame in stat_tables(path).items():
        pd.testing.assert_frame_equal(frame, stat_tables(reference)[name], obj=name)


# -------------------------------------------------------------- 3. foreign files
def _sqlite(path):
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (x)")
    return "SQLite"


FOREIGN = {
    "sqlite": _sqlite,
    "random-bytes": lambda p: p.write_bytes(os.urandom(4096)) and "unknown format",
    "empty": lambda p: p.write_bytes(b"") or "empty",
}


@pytest.mark.parametrize("kind", list(FOREIGN))
@pytest.mark.parametrize("read_only", [False, True])
def test_foreign_file_is_a_clear_error_without_extensions(tmp_path, monkeypatch, kind, read_only):
    """DuckDB would try to download an extension for a SQLite file; it never sees it now."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))  # DuckDB installs extensions under ~/.duckdb
    path = tmp_path / "x.duckdb"
    what = FOREIGN[kind](path)
    before = path.read_bytes()
    with pytest.raises(fs.StoreError, match=rf"x\.duckdb is not a DuckDB file \(.*{what}"):
        fs.FeatureStore.open(path, read_only=read_only)
    assert not (home / ".duckdb").exists(), "DuckDB tried to install an extension"
    assert path.read_bytes() == before  # the file is left as it was
