"""The typed interfaces the store indexes from: a real SARM and precomputed latents agree."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_sarm
from test_store_ingest import make_groups

from feature_store import CachedLatents, FeatureStore, LatentSource, TokenSource, ingest
from sarm.scoring import response_rows


@pytest.fixture(scope="module")
def sarm(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=5, d_sae=64, k=8)


def test_a_sarm_satisfies_both_protocols(sarm):
    assert isinstance(sarm, LatentSource) and isinstance(sarm, TokenSource)
    assert not isinstance(object(), LatentSource)


def test_cached_latents_index_like_the_model(sarm, tmp_path):
    groups = make_groups()
    _, convs = response_rows(groups)
    pooled = sarm.pooled_latents(convs)
    cached = CachedLatents(sarm.fingerprint(), sarm.head, convs, pooled)
    assert isinstance(cached, LatentSource)
    stores = []
    for name, source in (("model", sarm), ("cached", cached)):
        with FeatureStore.open(tmp_path / f"{name}.duckdb") as store:
            ingest(store, source, groups, chunk_size=4, top_n=3, progress=False)
            stores.append((store.examples_frame(), store.latent_matrix()))
    (frame_a, lat_a), (frame_b, lat_b) = stores
    # the model batches each chunk differently from the one earlier pass: float noise only
    np.testing.assert_allclose(frame_a["reward"], frame_b["reward"], atol=1e-5)
    np.testing.assert_array_equal(lat_a.indices, lat_b.indices)
    np.testing.assert_allclose(lat_a.values, lat_b.values, atol=1e-5)


def test_cached_latents_never_run_a_model(sarm):
    groups = make_groups(3)
    _, convs = response_rows(groups)
    cached = CachedLatents(sarm.fingerprint(), sarm.head, convs[:2], sarm.pooled_latents(convs[:2]))
    assert cached.pooled_latents(convs[1:2]).n == 1
    with pytest.raises(KeyError, match="not computed in advance"):
        cached.pooled_latents(convs[2:3])
    with pytest.raises(ValueError, match="3 conversations for 2 pooled rows"):
        CachedLatents(sarm.fingerprint(), sarm.head, convs[:3], sarm.pooled_latents(convs[:2]))
