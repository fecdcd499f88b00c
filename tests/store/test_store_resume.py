"""An ingest killed with SIGKILL and restarted ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from helpers import make_tiny_sarm

from feature_store import FeatureStore, ingest
from sarm import load_sarm, save_sarm
from sarm.data import load_preferences, save_jsonl
from sarm.types import PreferenceGroup

CHUNK, BATCH = 2, 2
# tables compared after the runs, with the columns that legitimately differ (timestamps)
TABLES = {
    "examples": "example_id",
    "latents": "example_id, feature_id",
    "head_weights": "feature_id",
    "ingest_chunks": "chunk_index",
    "feature_stats": "feature_id",
    "feature_histograms": "feature_id, bin",
    "feature_examples": "feature_id, band, rank",
    "meta": "key",
}
VOLATILE = {"committed_at", "value"}

SCRIPT = textwrap.dedent(
    """
    import sys
    from sarm import load_sarm
    from sarm.data import load_preferences
    from feature_store import FeatureStore, ingest

    model, data, store_path, marker, batch, chunk = sys.argv[1:7]
    sarm = load_sarm(model)
    groups = load_preferences(data).groups

    def committed(chunk):
        with open(marker, "a") as fh:
            fh.write(f"{chunk.index}\\n")

    with FeatureStore.open(store_path) as store:
        ingest(store, sarm, groups, batch_size=int(batch), chunk_size=int(chunk),
               progress=False, on_chunk=committed)
    """
)


def subprocess_env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def make_groups(n: int = 24) -> list[PreferenceGroup]:
    return [
        PreferenceGroup(
            f"q{i}",
            ({"role": "user", "content": f"Question {i}: how do I sort a list?"},),
            (f"Use sorted(xs); it returns a new list. ({i})" + " Example." * (i % 3),),
            (f"Lists cannot be sorted. ({i})",),
            subset=("code", "chat")[i % 2],
        )
        for i in range(n)
    ]


def table(path: Path, name: str, order: str) -> pd.DataFrame:
    with duckdb.connect(str(path), read_only=True) as con:
        frame = con.execute(f"SELECT * FROM {name} ORDER BY {order}").df()
    if name == "meta":
        frame = frame[~frame["key"].isin(["created_at", "stats_refreshed_at"])]
        return frame.reset_index(drop=True)
    return frame.drop(columns=[c for c in frame.columns if c in VOLATILE and c != "value"])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    model_dir = save_sarm(make_tiny_sarm(root, seed=3, d_sae=64, k=8), root / "saved")
    data = save_jsonl(make_groups(), root / "data.jsonl")
    reference = root / "reference.duckdb"
    with FeatureStore.open(reference) as store:
        ingest(
            store,
            load_sarm(model_dir),
            load_preferences(data).groups,
            batch_size=BATCH,
            chunk_size=CHUNK,
            progress=False,
        )
    return root, model_dir, data, reference


def run_ingest(setup, store: Path, marker: Path, kill_after_first_chunk: bool) -> int:
    root, model_dir, data, _ = setup
    script = root / "ingest_script.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(model_dir),
            str(data),
            str(store),
            str(marker),
            str(BATCH),
            str(CHUNK),
        ],
        env=subprocess_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after_first_chunk:
        deadline = time.monotonic() + 120
        while not (marker.exists() and marker.read_text().strip()) and proc.poll() is None:
            assert time.monotonic() < deadline, "no chunk was committed within 120 s"
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    if not kill_after_first_chunk:
        assert proc.returncode == 0, err
    return proc.returncode


def test_sigkill_then_resume_equals_uninterrupted(setup, tmp_path):
    _, _, _, reference = setup
    store, marker = tmp_path / "killed.duckdb", tmp_path / "chunks.txt"
    assert run_ingest(setup, store, marker, kill_after_first_chunk=True) == -signal.SIGKILL
    n_chunks = 24 * 2 // CHUNK
    with FeatureStore.open(store, read_only=True) as partial:
        summary = partial.summary()
        done = sorted(partial.meta() and _chunks(partial))
    assert 0 < len(done) < n_chunks, "the kill must land mid-run"
    assert done == list(range(len(done)))  # committed chunks are a prefix, none half-written
    assert summary["n_examples"] == sum(min(CHUNK, 48 - c * CHUNK) for c in done)
    assert not summary["complete"]
    marker.unlink()
    run_ingest(setup, store, marker, kill_after_first_chunk=False)
    resumed = [int(x) for x in marker.read_text().split()]
    assert resumed == list(range(len(done), n_chunks))  # only the missing chunks were computed
    for name, order in TABLES.items():
        got, want = table(store, name, order), table(reference, name, order)
        pd.testing.assert_frame_equal(
            got, want, check_exact=name in {"examples", "latents"}, rtol=1e-12, obj=name
        )


def _chunks(store: FeatureStore) -> list[int]:
    with store.read("test") as cur:
        return [r[0] for r in cur.execute("SELECT chunk_index FROM ingest_chunks").fetchall()]
