"""A model that reads the SAE error: the store keeps its column, names it, and its rewards hold."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_tiny_sarm
from test_store_ingest import make_groups

from app import core
from feature_store import CachedLatents, FeatureStore, ingest
from feature_store.explanations import firing_features, top_weight_features
from sarm.head import Head
from sarm.model import SARM
from sarm.residual import ERROR_NAME, ErrorReadout, error_parts
from sarm.scoring import response_rows


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=7, d_sae=64, k=8)
    rng = np.random.default_rng(1)
    v = rng.normal(size=base.backbone.d_model)
    readout = ErrorReadout(v / np.linalg.norm(v))
    head = Head(rng.normal(0, 0.2, base.n_sae_latents + 1).astype(np.float32), 0.1)
    return SARM(base.backbone, base.sae, head, base.sae_meta, error_readout=readout)


@pytest.mark.parametrize("cached", [False, True])
def test_the_store_keeps_and_names_the_error_column(model, tmp_path, cached):
    groups = make_groups()
    _, convs = response_rows(groups)
    source = model
    if cached:
        pooled = model.pooled_latents(convs)
        source = CachedLatents(model.fingerprint(), model.head, convs, pooled, model.error_feature)
    with FeatureStore.open(tmp_path / "s.duckdb") as store:
        ingest(store, source, groups, chunk_size=4, top_n=3, progress=False)
        m = model.error_feature
        assert store.error_feature == m == store.d_sae - 1
        assert store.titles_for([m, 0])[m] == ERROR_NAME
        assert m not in firing_features(store) and m not in top_weight_features(store, 5)
        frame, latents = store.examples_frame(), store.latent_matrix()
    live = {s.conversation[-1]["content"]: s for s in model.score_batch(convs)}
    # every stored reward is the model's, error term included, and the column is the error
    np.testing.assert_allclose(model.head.rewards(latents), frame["reward"], atol=1e-5)
    features, error = error_parts(latents, model.head.weights, m)
    assert np.abs(error).max() > 0
    np.testing.assert_allclose(features + error + model.head.bias, frame["reward"], atol=1e-5)
    one = next(iter(live.values()))
    assert one.error_contribution == pytest.approx(
        one.activations[m] * float(model.head.weights[m]), abs=1e-6
    )
    share = core.dataset_error_share(model.head, latents, m)
    assert 0.0 < share < 1.0
    assert core.dataset_error_share(model.head, latents, None) is None
