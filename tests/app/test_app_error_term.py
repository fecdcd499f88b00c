"""The dashboard shows the SAE error term: its share of the reward variance, and per score."""

from __future__ import annotations

import pytest
from app_env import build_app_env, copy_store
from streamlit.testing.v1 import AppTest
from test_app_pages import APP, go

from app import core, state
from feature_store import FeatureStore
from sarm import load_sarm
from sarm.residual import error_parts, error_share


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return build_app_env(tmp_path_factory.getbasetemp() / "app-env-error", error_readout=True)


@pytest.fixture
def store_path(env, tmp_path, monkeypatch):
    path = copy_store(env, tmp_path / "store.duckdb")
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    yield path
    state.open_store.clear()


def metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric {label!r} in {[m.label for m in at.metric]}"
    return found[0]


def test_overview_shows_the_error_share_of_the_store(env, store_path):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    model = load_sarm(env.model_dir)
    with FeatureStore.open(store_path) as store:
        latents = store.latent_matrix()
        assert store.error_feature == model.error_feature
    expected = error_share(*error_parts(latents, model.head.weights, model.error_feature))
    assert 0 < expected < 1
    assert metric(at, "SAE error's share of reward variance") == f"{expected:.1%}"
    assert core.dataset_error_share(model.head, latents, model.error_feature) == expected


def test_explain_shows_the_error_term_of_the_score(env, store_path):
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    go(at, "explain")
    eid = at.selectbox(key="explain_example").value
    with FeatureStore.open(store_path) as store:  # same process: shares the app's connection
        conversation = store.example(eid).conversation()
    score = load_sarm(env.model_dir).score(messages=conversation)
    assert score.error_contribution != 0
    assert float(metric(at, "SAE error term")) == pytest.approx(score.error_contribution, abs=2e-4)
    assert float(metric(at, "Reward")) == pytest.approx(score.reward, abs=2e-6)
