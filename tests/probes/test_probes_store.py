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

import json
import os
import shutil
import sqlite3

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_tiny_sarm

import feature_store as fs
from feature_store import stats
from feature_store.chunks import EXAMPLES_SCHEMA
from feature_store.synthetic import SyntheticSpec, build_synthetic_store
from sarm.head import Head
from sarm.types import PreferenceGroup

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


# ------------------------------------------------------------- 2. shard merge
CHUNK = 3


def shard_groups(n: int = 8) -> list[PreferenceGroup]:
    return [
        PreferenceGroup(
            f"p{i}",
            ({"role": "user", "content": f"Name a colour ({i})."},),
            (f"Blue, like the sky on day {i}.",),
            ("Seven.",) if i % 2 else ("Seven.", "I will not."),
            subset="colours",
            kind="pair" if i % 2 else "best_of_n",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """Parts of two shard workers over a tiny real SARM."""
    sarm = make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=7, d_sae=48, k=6)
    out = tmp_path_factory.mktemp("parts") / "parts"
    for i in range(2):
        fs.ingest_shard(sarm, shard_groups(), out, fs.Shard(i, 2), chunk_size=CHUNK, progress=False)
    return out


def _edit(path, change) -> None:
    """Rewrite the Parquet part ``path`` with ``change(columns, metadata)`` applied (pyarrow)."""
    table = pq.read_table(path)
    columns = {name: table[name].to_pylist() for name in table.column_names}
    metadata = dict(table.schema.metadata or {})
    schema = change(columns, metadata) or table.schema
    pq.write_table(pa.table(columns, schema=schema.with_metadata(metadata)), path)


def _bump(column: str, row: int, delta: float):
    def change(columns, metadata):
        columns[column][row] += delta

    return change


def _set(column: str, row: int, value):
    def change(columns, metadata):
        columns[column][row] = value

    return change


def _drop_row(columns, metadata):
    for values in columns.values():
        del values[-1]


def _float32_reward(columns, metadata):
    return pa.schema(
        [pa.field("reward", pa.float32()) if f.name == "reward" else f for f in EXAMPLES_SCHEMA]
    )


def _other_sae(columns, metadata):
    key = b"sarm.part"
    identity = json.loads(metadata.get(key, b"{}"))
    metadata[key] = json.dumps({**identity, "sae": "another-sae"}).encode()


TAMPERS = {
    # name: (part file, change, what the refusal must say)
    "reward": ("chunk-000001.examples", _bump("reward", 0, 0.25), "stored rewards differ"),
    "reward-tiny": ("chunk-000002.examples", _bump("reward", 2, 1e-3), "example 8: stored"),
    "activation": ("chunk-000002.latents", _bump("activation", 0, 1.0), "rewards differ"),
    "example-id": ("chunk-000000.examples", _set("example_id", 1, 7), "expected ids 0..2"),
    "dropped-example": ("chunk-000003.examples", _drop_row, "holds 2 examples"),
    "latent-outside-chunk": ("chunk-000001.latents", _set("example_id", 0, 0), "outside 3..5"),
    "feature-out-of-range": ("chunk-000001.latents", _set("feature_id", 0, 4800), "feature ids"),
    "schema": ("chunk-000000.examples", _float32_reward, r"reward: float \(expected double\)"),
    "model-fingerprint": ("chunk-000003.latents", _other_sae, r"different run .*\['sae'\]"),
}


def _copy_parts(parts, tmp_path):
    copy = tmp_path / "parts"
    shutil.copytree(parts, copy)
    return copy


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_merge_refuses_a_tampered_part(parts, tmp_path, tamper):
    name, change, says = TAMPERS[tamper]
    copy = _copy_parts(parts, tmp_path)
    _edit(copy / f"{name}.parquet", change)
    with fs.FeatureStore.open(tmp_path / "merged.duckdb") as store:
        with pytest.raises(fs.StoreError, match=says) as refused:
            fs.merge_parts(store, copy, progress=False)
        assert f"{name}.parquet" in str(refused.value)
        assert store.fingerprint() is None and store.summary()["n_examples"] == 0


def test_merge_refuses_parts_of_another_dataset(parts, tmp_path):
    """Rewards still match, but an example's text differs from the manifest's dataset."""
    copy = _copy_parts(parts, tmp_path)
    _edit(copy / "chunk-000002.examples.parquet", _set("response", 0, "Red, obviously."))
    with fs.FeatureStore.open(tmp_path / "merged.duckdb") as store:
        with pytest.raises(fs.StoreError, match=r"content fingerprint .* another dataset"):
            fs.merge_parts(store, copy, progress=False)
        assert store.summary()["n_examples"] == 0


def test_merge_refuses_an_unreadable_part(parts, tmp_path):
    copy = _copy_parts(parts, tmp_path)
    (copy / "chunk-000001.latents.parquet").write_bytes(b"PAR1 truncated")
    with fs.FeatureStore.open(tmp_path / "merged.duckdb") as store:
        with pytest.raises(fs.StoreError, match=r"chunk-000001\.latents\.parquet .*Parquet"):
            fs.merge_parts(store, copy, progress=False)
        assert store.summary()["n_examples"] == 0


def test_untampered_parts_merge_with_rewards_of_the_head(parts, tmp_path):
    with fs.FeatureStore.open(tmp_path / "merged.duckdb") as store:
        assert fs.merge_parts(store, parts, progress=False) == 7
        summary = store.summary()
        frame = store.examples_frame()
        recomputed = store.head_weights()
        latents = store.latent_matrix()
    assert summary["complete"] and summary["n_examples"] == 20
    weights, bias = recomputed
    np.testing.assert_allclose(
        frame["reward"].to_numpy(), Head(weights, bias).rewards(latents), rtol=1e-6, atol=1e-6
    )
