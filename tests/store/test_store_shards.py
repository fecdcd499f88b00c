"""Shard workers + merge give the single-worker store; the `sarm index` command end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import make_tiny_sarm
from test_store_resume import TABLES, table

from feature_store import (
    FeatureStore,
    Shard,
    StoreError,
    StoreMismatchError,
    ingest,
    ingest_shard,
    merge_parts,
)
from sarm.checkpoints import save_sarm
from sarm.data import save_jsonl
from sarm.types import PreferenceGroup, responses_of
from workflows.cli import main as sarm_main

CHUNK = 3


def make_groups(n: int = 10, tag: str = "") -> list[PreferenceGroup]:
    return [
        PreferenceGroup(
            f"h{i}{tag}",
            ({"role": "user", "content": f"Is {i} a prime number?{tag}"},),
            (f"{i} is {'not ' if i % 2 == 0 else ''}prime because of its divisors.",),
            ("Yes.", "No idea.") if i % 3 == 0 else ("Yes.",),
            subset="math",
            kind="best_of_n" if i % 3 == 0 else "pair",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def sarm(tmp_path_factory):
    return make_tiny_sarm(tmp_path_factory.mktemp("tiny"), seed=5, d_sae=64, k=8)


@pytest.fixture(scope="module")
def single(sarm, tmp_path_factory):
    path = tmp_path_factory.mktemp("single") / "single.duckdb"
    with FeatureStore.open(path) as store:
        ingest(store, sarm, make_groups(), chunk_size=CHUNK, batch_size=4, progress=False)
    return path


def assert_same_store(a, b):
    for name, order in TABLES.items():
        got, want = table(a, name, order), table(b, name, order)
        if name == "meta":  # the source label may differ; everything else must not
            got, want = (f[f["key"] != "source"].reset_index(drop=True) for f in (got, want))
        pd.testing.assert_frame_equal(
            got, want, check_exact=name in {"examples", "latents"}, rtol=1e-12, obj=name
        )


def test_three_workers_then_merge_equal_single_run(sarm, single, tmp_path):
    parts = tmp_path / "parts"
    computed = [
        ingest_shard(
            sarm, make_groups(), parts, Shard(i, 3), chunk_size=CHUNK, batch_size=4, progress=False
        )
        for i in range(3)
    ]
    n_examples = sum(len(g.responses()) for g in make_groups())
    assert sum(computed) == -(-n_examples // CHUNK)
    assert (
        ingest_shard(sarm, make_groups(), parts, Shard(1, 3), chunk_size=CHUNK, progress=False) == 0
    )
    merged = tmp_path / "merged.duckdb"
    with FeatureStore.open(merged) as store:
        assert merge_parts(store, parts, progress=False) == sum(computed)
        assert merge_parts(store, parts, progress=False) == 0  # merging again adds nothing
    assert_same_store(merged, single)


def test_merge_refuses_missing_chunks(sarm, tmp_path):
    parts = tmp_path / "parts"
    ingest_shard(sarm, make_groups(), parts, Shard(0, 2), chunk_size=CHUNK, progress=False)
    with FeatureStore.open(tmp_path / "m.duckdb") as store:
        with pytest.raises(StoreError, match=r"lacks \d+ of \d+ chunks \(first: \[1"):
            merge_parts(store, parts, progress=False)
        assert store.fingerprint() is None and store.summary()["n_examples"] == 0


def test_workers_must_agree(sarm, tmp_path):
    parts = tmp_path / "parts"
    ingest_shard(sarm, make_groups(), parts, Shard(0, 2), chunk_size=CHUNK, progress=False)
    with pytest.raises(StoreMismatchError, match="different run"):
        ingest_shard(
            sarm, make_groups(tag="!"), parts, Shard(1, 2), chunk_size=CHUNK, progress=False
        )
    with pytest.raises(FileNotFoundError, match=r"manifest\.json not found"):
        merge_parts(FeatureStore.open(tmp_path / "x.duckdb"), tmp_path / "nowhere", progress=False)


@pytest.mark.parametrize("text", ["3/2", "a/b", "1", "-1/2", "0/0"])
def test_bad_shard_spec(text):
    with pytest.raises(ValueError, match=r"shard|i/n"):
        Shard.parse(text)


@pytest.fixture(scope="module")
def model_dir(sarm, tmp_path_factory):
    return save_sarm(sarm, tmp_path_factory.mktemp("saved") / "model")


def test_cli_index_equals_python_ingest(model_dir, single, tmp_path, capsys):
    data = save_jsonl(make_groups(), tmp_path / "data.jsonl")
    store = tmp_path / "cli.duckdb"
    rc = sarm_main(
        [
            "index",
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
            "--no-evidence",  # the reference ingest keeps none (tests/store/test_evidence.py)
            "--progress-file",
            str(tmp_path / "progress.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "MB per 1,000 examples" in out and "0 already stored" in out
    n = len(responses_of(make_groups()))
    progress = json.loads((tmp_path / "progress.json").read_text())
    assert progress == {"stage": "done", "done": n, "total": n}
    assert_same_store(store, single)


def test_cli_shards_and_merge(model_dir, single, tmp_path, capsys):
    data = save_jsonl(make_groups(), tmp_path / "data.jsonl")
    parts = tmp_path / "parts"
    for i in range(2):
        assert (
            sarm_main(
                [
                    "index",
                    "--model",
                    str(model_dir),
                    "--data",
                    str(data),
                    "--shard",
                    f"{i}/2",
                    "--parts",
                    str(parts),
                    "--chunk-size",
                    str(CHUNK),
                    "--batch-size",
                    "4",
                    "--quiet",
                    "--no-evidence",  # as the reference; tests/store/test_parts_evidence.py
                ]
            )
            == 0
        )
    store = tmp_path / "merged.duckdb"
    assert sarm_main(["index", "--merge", str(parts), "--store", str(store), "--quiet"]) == 0
    assert "merged" in capsys.readouterr().out
    assert_same_store(store, single)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["index", "--data", "x.jsonl", "--store", "s.duckdb"], "give --model and --data"),
        (
            ["index", "--model", "m", "--data", "x", "--shard", "0/2", "--store", "s"],
            "give --parts DIR",
        ),
        (["index", "--merge", "parts"], "--merge DIR takes only --store"),
        (
            ["index", "--merge", "p", "--store", "s", "--progress-file", "f"],
            "--progress-file is only used",
        ),
        (
            ["index", "--model", "m", "--data", "x", "--parts", "p"],
            "--parts is only used with --shard",
        ),
    ],
)
def test_cli_bad_arguments(argv, match, capsys):
    assert sarm_main(argv) == 2
    assert match in capsys.readouterr().err
