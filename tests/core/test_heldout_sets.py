"""The public held-out pairwise test sets (data/heldout): manifest, files, schema, no train overlap."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sarm.data import load_preferences
from sarm.datasets import heldout
from sarm.datasets.prefs import normalise_prompt
from sarm.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
HELDOUT = ROOT / "data" / "heldout"
TRAIN = ROOT / "data" / "prefs" / "splits" / "train.jsonl.gz"
SCHEMA = (
    "id",
    "source",
    "subset",
    "category",
    "prompt",
    "chosen",
    "rejected",
    "label_type",
    "meta",
)
MANIFEST = json.loads((HELDOUT / "MANIFEST.json").read_text(encoding="utf-8"))
SETS = list(MANIFEST["sets"])


def _rows(name: str) -> list[dict]:
    path = HELDOUT / MANIFEST["sets"][name]["file"]
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.fixture(scope="module")
def train_prompts() -> set[str]:
    with gzip.open(TRAIN, "rt", encoding="utf-8") as fh:
        return {normalise_prompt(str(json.loads(line)["prompt"])) for line in fh if line.strip()}


def test_at_least_five_sets() -> None:
    assert len(SETS) >= 5
    assert heldout.heldout_sets() == SETS


@pytest.mark.parametrize("name", SETS)
def test_file_exists_and_sha256_matches(name: str) -> None:
    entry = MANIFEST["sets"][name]
    path = HELDOUT / entry["file"]
    assert path.is_file(), path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    assert heldout.heldout_path(name) == path
    # reproducible gzip: no mtime, no file name in the header
    header = path.read_bytes()[:10]
    assert header[4:8] == b"\0\0\0\0"
    assert not header[3] & 0x08


@pytest.mark.parametrize("name", SETS)
def test_loads_with_load_preferences(name: str) -> None:
    entry = MANIFEST["sets"][name]
    result = load_preferences(HELDOUT / entry["file"])
    assert result.n_skipped == 0
    assert len(result.groups) == entry["rows"]
    assert len(heldout.load_heldout(name).groups) == entry["rows"]


@pytest.mark.parametrize("name", SETS)
def test_rows_follow_the_schema(name: str) -> None:
    entry = MANIFEST["sets"][name]
    rows = _rows(name)
    assert len(rows) == entry["rows"] <= MANIFEST["max_rows"]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids), "duplicate ids"
    for row in rows:
        assert tuple(row) == SCHEMA
        assert row["source"] == name
        assert isinstance(row["meta"], dict)
        for key in ("prompt", "chosen", "rejected"):
            assert isinstance(row[key], str) and row[key].strip(), (row["id"], key)
        assert row["chosen"] != row["rejected"], row["id"]
        longer = max(len(row["chosen"]), len(row["rejected"]))
        assert len(row["prompt"]) + longer <= MANIFEST["max_chars"], row["id"]
    assert dict(Counter(r["subset"] for r in rows)) == entry["subsets"]
    longer_frac = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    assert round(longer_frac, 3) == entry["stats"]["chosen_longer_fraction"]


@pytest.mark.parametrize("name", SETS)
def test_no_prompt_shared_with_train(name: str, train_prompts: set[str]) -> None:
    shared = [r["id"] for r in _rows(name) if normalise_prompt(r["prompt"]) in train_prompts]
    assert not shared, shared[:5]


@pytest.mark.parametrize("name", SETS)
def test_manifest_records_provenance(name: str) -> None:
    entry = MANIFEST["sets"][name]
    for key in ("source_repo", "url", "commit", "licence", "paths", "dropped", "raw_files"):
        assert entry[key], key
    assert entry["dropped"]["not_sampled"] >= 0


def test_unknown_set_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown held-out set 'nope'"):
        heldout.heldout_path("nope")
    with pytest.raises(InputError, match="manifest not found"):
        heldout.heldout_sets(HELDOUT / "missing")
