"""Labels: every version kept, latest shown, text search, concurrent writers lose nothing."""

from __future__ import annotations

import threading

import pytest

from feature_store import FeatureStore
from feature_store.synthetic import SyntheticSpec, build_synthetic_store

D_SAE = 64


@pytest.fixture
def store(tmp_path):
    s = build_synthetic_store(
        tmp_path / "labels.duckdb", SyntheticSpec(n_pairs=30, d_sae=D_SAE, nnz=4)
    )
    yield s
    s.close()


def test_versions_history_and_latest(store):
    first = store.set_label(5, "Refusals", "declines to help", author="ann")
    second = store.set_label(5, "Polite refusals", author="bob", source="llm")
    assert second > first
    history = store.label_history(5)
    assert history["label"].tolist() == ["Polite refusals", "Refusals"]
    assert history["author"].tolist() == ["bob", "ann"]
    assert history["source"].tolist() == ["llm", "human"]
    assert history["description"].tolist() == ["", "declines to help"]
    assert history["created_at"].is_monotonic_decreasing
    row = store.features(feature_ids=[5])
    assert row["label"].tolist() == ["Polite refusals"]
    assert store.labels_for([5, 6]) == {5: "Polite refusals"}


def test_clearing_keeps_history(store):
    store.set_label(7, "Code")
    store.set_label(7, "")
    assert store.features(feature_ids=[7])["label"].isna().all()
    assert store.label_history(7)["label"].tolist() == ["", "Code"]
    assert store.labels_for([7]) == {}
    assert store.count_features(labelled=True) == 0


def test_labels_survive_reopen_and_stats_refresh(store):
    store.set_label(9, "Math", "numbers and equations")
    store.refresh_stats()
    path = store.path
    store.close()
    with FeatureStore.open(path, read_only=True) as reader:
        assert reader.labels_frame()["label"].tolist() == ["Math"]
        assert reader.feature(9)["label_description"] == "numbers and equations"


def test_search(store):
    store.set_label(1, "Python code", "fires on def and import")
    store.set_label(2, "Apologies", "sorry, I can't help with CODE requests")
    store.set_label(3, "100% sure", "overconfident")
    store.set_label(4, "it's", "apostrophe")
    store.set_label(10, "old code label")
    store.set_label(10, "renamed")
    got = store.search_labels("code")
    assert got["feature_id"].tolist() == [1, 2]  # label match first, then description; 10 no longer
    assert store.search_labels("100%")["feature_id"].tolist() == [3]  # % is literal, not a wildcard
    assert store.search_labels("_")["feature_id"].tolist() == []
    assert store.search_labels("it's")["feature_id"].tolist() == [4]
    assert store.features(search="CODE", order_by="feature_id", descending=False)[
        "feature_id"
    ].tolist() == [1, 2]
    assert store.search_labels("code", limit=1)["feature_id"].tolist() == [1]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"feature_id": D_SAE, "label": "x"}, "feature_id must be < 64"),
        ({"feature_id": -1, "label": "x"}, "feature_id must be >= 0"),
        ({"feature_id": 1.5, "label": "x"}, "feature_id must be an integer"),
        ({"feature_id": 1, "label": None}, "label must be a string"),
        ({"feature_id": 1, "label": "x" * 201}, "label is 201 characters long"),
        ({"feature_id": 1, "label": "x", "source": "robot"}, "source must be one of"),
        ({"feature_id": 1, "label": "a\x00b"}, "NUL"),
    ],
)
def test_bad_labels(store, kwargs, match):
    with pytest.raises(ValueError, match=match):
        store.set_label(**kwargs)
    assert store.labels_frame(all_versions=True).empty


def test_search_needs_text(store):
    with pytest.raises(ValueError, match="search text is empty"):
        store.search_labels("  ")


def test_concurrent_writers_lose_nothing(store):
    n_threads, per_thread = 8, 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads + 2)

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.set_label((t * per_thread + i) % D_SAE, f"t{t}-{i}", author=f"session{t}")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(30):
                store.features(labelled=True, limit=None)
                store.search_labels("t")
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    every = store.labels_frame(all_versions=True)
    assert len(every) == n_threads * per_thread
    assert every["label_id"].is_unique
    assert set(every["label"]) == {f"t{t}-{i}" for t in range(n_threads) for i in range(per_thread)}
    for t in range(n_threads):  # each session's own versions keep their order
        mine = every[every["author"] == f"session{t}"]
        assert mine["label"].tolist() == [f"t{t}-{i}" for i in range(per_thread)]
