"""The feature-ordered copy of the latents: same rows, sorted, kept fresh, built on migration."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest

from feature_store import FeatureStore
from feature_store.schema import migrations
from feature_store.synthetic import SyntheticSpec, build_synthetic_store

SPEC = SyntheticSpec(n_pairs=150, d_sae=64, nnz=12, chunk_size=40, shape="default")


def rows(path, sql):
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("byf") / "s.duckdb"
    build_synthetic_store(path, SPEC).close()
    return path


def test_same_rows_sorted_by_feature(store_path):
    mine = rows(store_path, "SELECT feature_id, example_id, activation FROM latents_by_feature")
    want = rows(store_path, "SELECT feature_id, example_id, activation FROM latents")
    assert len(mine) == 2 * SPEC.n_pairs * SPEC.nnz
    assert mine == sorted(want)  # the same rows, in (feature, example) order as stored


def test_live_top_examples_read_it(store_path):
    with FeatureStore.open_for_reading(store_path) as store:
        matrix = store.latent_matrix()
        for feature in (0, 5, 63):
            got = store.top_examples(feature, 200)  # beyond the stored top-20: ranked live
            ids, vals = matrix.column(feature)
            order = np.lexsort((matrix.example_ids[ids], -vals))
            assert got["example_id"].tolist() == matrix.example_ids[ids][order].tolist()
            np.testing.assert_array_equal(got["activation"].to_numpy(np.float32), vals[order])


def test_an_older_store_gets_it_on_migration(tmp_path):
    path = tmp_path / "old.duckdb"
    build_synthetic_store(path, SPEC).close()
    (mine,) = [m for m in migrations() if m.name == "latents_by_feature"]
    with duckdb.connect(str(path)) as con:  # back to the schema before this migration
        con.execute("DROP TABLE latents_by_feature")
        con.execute("DELETE FROM schema_version WHERE version >= ?", [mine.version])
    with FeatureStore.open_for_reading(path) as store:
        assert store.top_examples(3, 100)["example_id"].size > 0
    test_same_rows_sorted_by_feature(path)
