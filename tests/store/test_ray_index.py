"""`sarm index --engine ray` on a real local Ray cluster equals the single-process store.

Skips when Ray is not installed, unless SARM_REQUIRE_RAY=1 (CI), which makes a
missing Ray a failure. The cluster is started once (``ray.init(num_cpus=2)``).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from test_parts_evidence import assert_same_evidence, single_process_store
from test_store_resume import table
from test_store_shards import CHUNK, make_groups

from feature_store import FeatureStore, ingest, merge_parts
from sarm.checkpoints import load_sarm, save_sarm
from sarm.data import save_jsonl
from sarm.explain.evidence import EvidenceSpec
from workflows.cli import main as sarm_main


def _require_ray():
    try:
        import ray
    except ImportError as exc:
        if os.environ.get("SARM_REQUIRE_RAY") == "1":
            pytest.fail(f"SARM_REQUIRE_RAY=1 but Ray is not installed ({exc}): pip install .[ray]")
        pytest.skip("Ray is not installed (pip install .[ray])", allow_module_level=True)
    return ray


ray = _require_ray()
from feature_store.ray_engine import RaySettings, ingest_ray, plan_placement  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from helpers import make_tiny_sarm

    sarm = make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=5, d_sae=64, k=8)
    return save_sarm(sarm, tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture(scope="module")
def single(model_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "single.duckdb"
    with FeatureStore.open(path) as store:
        ingest(
            store,
            load_sarm(model_dir),
            make_groups(),
            chunk_size=CHUNK,
            batch_size=4,
            progress=False,
        )
    return path


@pytest.fixture(scope="module")
def single_evidence(model_dir, tmp_path_factory):
    """The single-process store with evidence (the default window) and decoder views."""
    path = tmp_path_factory.mktemp("single-ev") / "single.duckdb"
    return single_process_store(load_sarm(model_dir), path, EvidenceSpec().window)


def assert_equal_stores(got: Path, want: Path) -> None:
    """Same examples (rewards within 1e-4), same latents (activations within 1e-4)."""
    a, b = table(got, "examples", "example_id"), table(want, "examples", "example_id")
    assert len(a) == len(b) > 0
    text = [c for c in b.columns if c != "reward"]
    assert a[text].equals(b[text])
    np.testing.assert_allclose(a["reward"], b["reward"], atol=1e-4, rtol=0)
    la = table(got, "latents", "example_id, feature_id")
    lb = table(want, "latents", "example_id, feature_id")
    assert la[["example_id", "feature_id"]].equals(lb[["example_id", "feature_id"]])
    np.testing.assert_allclose(la["activation"], lb["activation"], atol=1e-4, rtol=0)
    sa, sb = table(got, "feature_stats", "feature_id"), table(want, "feature_stats", "feature_id")
    assert sa["n_active"].equals(sb["n_active"])


def test_cli_ray_engine_equals_single_process(
    cluster, model_dir, single, single_evidence, tmp_path, capsys
):
    data = save_jsonl(make_groups(), tmp_path / "data.jsonl")
    store = tmp_path / "ray.duckdb"
    rc = sarm_main(
        [
            "index",
            "--engine",
            "ray",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--store",
            str(store),
            "--chunk-size",
            str(CHUNK),
            "--batch-size",
            "4",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    n_examples = len(table(single, "examples", "example_id"))
    n_chunks = -(-n_examples // CHUNK)
    assert rc == 0 and f"{n_chunks} chunks, {n_examples} responses" in out and "merged" in out
    assert not (tmp_path / "ray.duckdb.parts").exists()  # removed once merged
    assert_equal_stores(store, single)
    assert_same_evidence(store, single_evidence, atol=1e-4)  # evidence kept, as by one process


class FailsOnce:
    """A SARM whose first chunk fails in each fresh process with a marker missing: Ray retries."""

    def __init__(self, model_dir: Path, marker: Path) -> None:
        self.inner, self.marker = load_sarm(model_dir), marker

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def pooled_latents(self, conversations, **kw):
        if not self.marker.exists():
            self.marker.write_text("failed once")
            raise RuntimeError("injected failure")
        return self.inner.pooled_latents(conversations, **kw)


def test_failed_chunk_is_retried_and_resume_skips_done(cluster, model_dir, single, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    parts, marker = tmp_path / "parts", tmp_path / "failed-once"
    make = functools.partial(FailsOnce, model_dir, marker)
    settings = RaySettings(num_workers=1, max_retries=2)
    kw = {"chunk_size": CHUNK, "batch_size": 4, "progress": False}
    report = ingest_ray(load_sarm(model_dir), make, make_groups(), parts, settings, **kw)
    n_examples = len(table(single, "examples", "example_id"))
    assert marker.exists() and report.n_chunks == -(-n_examples // CHUNK)
    assert report.n_examples == n_examples and report.n_tokens > 0
    again = ingest_ray(load_sarm(model_dir), make, make_groups(), parts, settings, **kw)
    assert again.n_chunks == again.n_examples == 0
    with FeatureStore.open(tmp_path / "m.duckdb") as store:
        merge_parts(store, parts, progress=False)
    assert_equal_stores(tmp_path / "m.duckdb", single)


def test_placement_leaves_a_core_and_fills_gpus():
    cpu = plan_placement(RaySettings(), cluster_cpus=2, cluster_gpus=0)
    assert (cpu.workers, cpu.cpus, cpu.gpus) == (1, 1.0, 0.0)
    two = plan_placement(RaySettings(num_workers=2), cluster_cpus=2, cluster_gpus=0)
    assert (two.workers, two.cpus) == (2, 0.5)  # fractional: 1 of 2 cores stays free
    gpu = plan_placement(RaySettings(num_gpus_per_worker=1), cluster_cpus=64, cluster_gpus=8)
    assert (gpu.workers, gpu.cpus, gpu.gpus) == (8, 1.0, 1.0)
    with pytest.raises(ValueError, match="has 0 GPUs"):
        plan_placement(RaySettings(num_gpus_per_worker=1), cluster_cpus=2, cluster_gpus=0)


class AlwaysFails(FailsOnce):
    def pooled_latents(self, conversations, **kw):
        raise RuntimeError("injected failure that never goes away")


def test_a_chunk_that_keeps_failing_fails_the_run(cluster, model_dir, tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    make = functools.partial(AlwaysFails, model_dir, tmp_path / "unused")
    settings = RaySettings(num_workers=1, max_retries=1)
    with pytest.raises(Exception, match="injected failure that never goes away"):
        ingest_ray(
            load_sarm(model_dir),
            make,
            make_groups(),
            tmp_path / "parts",
            settings,
            chunk_size=CHUNK,
            progress=False,
        )
    assert not list((tmp_path / "parts").glob("chunk-*"))  # nothing half-written
