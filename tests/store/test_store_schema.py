"""Schema creation, forward migration, and the store's own errors for bad files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from feature_store import (
    FeatureStore,
    StoreBusyError,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreVersionError,
    latest_version,
)
from feature_store.schema import migrate, migrations
from feature_store.synthetic import SyntheticSpec, build_synthetic_store


def subprocess_env() -> dict[str, str]:
    """The environment with this checkout first on the import path."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def test_new_store_is_at_latest_version(tmp_path):
    with FeatureStore.open(tmp_path / "sub" / "new.duckdb") as store:
        assert store.schema_version() == latest_version() == len(migrations())
        assert store.summary()["n_examples"] == 0
    with FeatureStore.open(tmp_path / "sub" / "new.duckdb") as again:  # reopening applies nothing
        assert again.schema_version() == latest_version()


def test_migrates_v1_store_keeping_labels(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    assert migrate(con, target=1) == [1]
    con.execute(
        "INSERT INTO labels (feature_id, label, description, author, source, created_at) "
        "VALUES (?, ?, '', 'ann', 'human', now()), (?, ?, '', 'bob', 'human', now())",
        [3, "old label", 3, "newer label"],
    )
    con.close()
    with pytest.raises(StoreVersionError, match="open it once without read_only"):
        FeatureStore.open(path, read_only=True)
    with FeatureStore.open(path) as store:
        assert store.schema_version() == latest_version()
        history = store.label_history(3)
        assert history["label"].tolist() == ["newer label", "old label"]
        store.save_head("h", np.zeros(4, np.float32))  # a table from a later migration
        assert store.set_label(3, "third") > 0
    with duckdb.connect(str(path), read_only=True) as raw:
        versions = [
            r[0] for r in raw.execute("SELECT version FROM schema_version ORDER BY 1").fetchall()
        ]
    assert versions == list(range(1, latest_version() + 1))


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.duckdb"
    FeatureStore.open(path).close()
    with duckdb.connect(str(path)) as con:
        con.execute(
            "INSERT INTO schema_version VALUES (?, 'from_the_future', now())",
            [latest_version() + 1],
        )
    for read_only in (False, True):
        with pytest.raises(StoreVersionError, match="newer than this library"):
            FeatureStore.open(path, read_only=read_only)


def test_missing_file_read_only(tmp_path):
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        FeatureStore.open(tmp_path / "nope.duckdb", read_only=True)


def test_directory_path(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        FeatureStore.open(tmp_path)


def test_not_a_duckdb_file(tmp_path):
    path = tmp_path / "junk.duckdb"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match=r"junk\.duckdb"):
        FeatureStore.open(path)


def test_foreign_duckdb_database(tmp_path):
    path = tmp_path / "other.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE sales (x INTEGER)")
    with pytest.raises(StoreError, match="not a feature store"):
        FeatureStore.open(path)


def test_read_only_store_refuses_writes_and_serves_reads_and_labels(tmp_path):
    path = tmp_path / "s.duckdb"
    store = build_synthetic_store(path, SyntheticSpec(n_pairs=40, d_sae=32, nnz=4))
    store.set_label(1, "x")
    expected = store.features(limit=None)
    store.close()
    with FeatureStore.open(path, read_only=True) as reader:
        pd.testing.assert_frame_equal(reader.features(limit=None), expected)
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            reader.refresh_stats()
        # labels live in the annotations database beside the file: saved all the same
        reader.set_label(1, "y")
        assert reader.labels_for([1]) == {1: "y"}


def test_closed_store(tmp_path):
    store = FeatureStore.open(tmp_path / "c.duckdb")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="is closed"):
        store.meta()


def test_duckdb_errors_become_store_errors(tmp_path):
    with FeatureStore.open(tmp_path / "e.duckdb") as store:
        with (
            pytest.raises(StoreError, match="failed on feature store"),
            store.read("a bad query") as cur,
        ):
            cur.execute("SELECT * FROM no_such_table")
        with pytest.raises(StoreError, match=r"e\.duckdb"), store.write("a failing write") as cur:
            cur.execute("INSERT INTO meta VALUES ('k', 'v')")
            cur.execute("INSERT INTO meta VALUES ('k', 'again')")  # primary key violation
        assert "k" not in store.meta()  # the whole transaction was rolled back


def test_store_held_by_another_process(tmp_path):
    path = tmp_path / "held.duckdb"
    FeatureStore.open(path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from feature_store import FeatureStore
            store = FeatureStore.open({str(path)!r})
            print("ready", flush=True)
            time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreBusyError, match="another process"):
            FeatureStore.open(path)
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    FeatureStore.open(path).close()  # usable again once the holder is gone


def test_a_reader_migrates_an_older_store_once_then_reads(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    migrate(con, target=latest_version() - 1)
    con.close()
    with pytest.raises(StoreVersionError, match="older") as info:
        FeatureStore.open(path, read_only=True)
    assert info.value.older
    with FeatureStore.open_for_reading(path) as store:
        assert store.read_only and store.schema_version() == latest_version()
