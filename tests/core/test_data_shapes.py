"""Real data shapes: gzip files, HH transcripts, pairing by key, best-of-N by prompt,
bootstrap intervals and the length baselines."""

from __future__ import annotations

import gzip
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from sarm.data import DataError, load_preferences, regroup_by_prompt, resolve_data
from sarm.evaluate import (
    PairIndex,
    accuracy_by,
    accuracy_interval,
    best_of_n_accuracy,
    bootstrap_interval,
    length_rewards,
    pairwise_accuracy,
    prompt_clusters,
)
from sarm.scoring import response_conversations

SHARED_PREFS = (
    Path(
        os.environ.get("SARM_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
    )
    / "prefs"
)

ROWS = [
    {
        "id": "a",
        "source": "src1",
        "subset": "s",
        "category": "safety",
        "prompt": "Name a colour.",
        "chosen": "Blue.",
        "rejected": "Car.",
    },
    {"prompt": "Say hi.", "chosen": ["Hi!"], "rejected": ["Bye.", "No."], "category": "chat"},
]


def user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def write(path: Path, rows: list[dict]) -> Path:
    """``rows`` as JSONL or JSON, gzipped when the name ends in .gz."""
    inner = path.name.removesuffix(".gz")
    text = (
        "".join(json.dumps(r) + "\n" for r in rows)
        if inner.endswith(".jsonl")
        else json.dumps(rows)
    )
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


# ------------------------------------------------------------------------ gzip


@pytest.mark.parametrize("name", ["prefs.jsonl.gz", "prefs.json.gz"])
def test_gzip_loads_like_the_plain_file(tmp_path, name):
    plain = load_preferences(write(tmp_path / name.removesuffix(".gz"), ROWS)).groups
    zipped = load_preferences(write(tmp_path / name, ROWS)).groups
    assert zipped == plain and len(zipped) == 2
    assert [g.meta for g in zipped] == [g.meta for g in plain]
    assert zipped[1].group_id == "prefs:2"  # default ids from the name without .jsonl.gz


def test_source_and_category_are_kept(tmp_path):
    groups = load_preferences(write(tmp_path / "p.jsonl.gz", ROWS)).groups
    assert groups[0].subset == "s"
    assert groups[0].meta == {"source": "src1", "category": "safety"}
    assert groups[1].subset == "chat" and groups[1].meta == {"category": "chat"}


def test_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "p", "chosen": "c", "rejected": "r"}\n')[:-12])
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz.*gzip"):
        load_preferences(path)
    (tmp_path / "notgz.json.gz").write_text("[]")
    with pytest.raises(DataError, match=r"notgz\.json\.gz.*gzip"):
        load_preferences(tmp_path / "notgz.json.gz")
    (tmp_path / "x.csv.gz").write_bytes(gzip.compress(b"a,b\n"))
    with pytest.raises(ValueError, match=r"x\.csv\.gz.*\.jsonl\.gz"):
        load_preferences(tmp_path / "x.csv.gz")


# --------------------------------------------------------------- HH transcripts


def test_hh_transcript_becomes_chat_messages(tmp_path):
    rows = [
        {
            "prompt": "Human: hi there\n\nAssistant: Hello!  \n\nHuman: how do I\n\nbake?\n\nAssistant:",
            "chosen": "Like this.",
            "rejected": "No.",
        },
        {"prompt": "\n\nHuman: one turn\n\nAssistant:", "chosen": "a", "rejected": "b"},
        {"prompt": "Quote: 'Human: x\n\nAssistant: y'", "chosen": "a", "rejected": "b"},
    ]
    groups = load_preferences(write(tmp_path / "hh.jsonl.gz", rows)).groups
    assert groups[0].prompt == (
        {"role": "user", "content": "hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how do I\n\nbake?"},
    )
    assert groups[0].conversation("Like this.")[-1] == {
        "role": "assistant",
        "content": "Like this.",
    }
    assert groups[1].prompt == user("one turn")
    assert groups[2].prompt == user(rows[2]["prompt"])  # not a transcript: kept as is


@pytest.mark.parametrize(
    ("prompt", "problem"),
    [
        ("Human: q\n\nAssistant: an answer already", "must end with a Human turn"),
        ("Human: q\n\nAssistant: a\n\nHuman: \n\nAssistant:", r"turn 3 \(user\) .* is empty"),
    ],
)
def test_bad_hh_transcript_names_row_and_field(tmp_path, prompt, problem):
    path = write(tmp_path / "hh.jsonl", [{"prompt": prompt, "chosen": "a", "rejected": "b"}])
    with pytest.raises(DataError, match=rf"hh\.jsonl: row 1: field 'prompt': .*{problem}"):
        load_preferences(path)


# -------------------------------------------------------------------- pair_key


LABELLED = [
    {"question_id": 7, "question": "Q7?", "answer": "right", "label": "chosen", "source": "s"},
    {"question_id": 9, "question": "Q9?", "answer": "good", "label": "Chosen"},
    {"question_id": 7, "question": "Q7?", "answer": "wrong", "label": "rejected"},
    {"question_id": 9, "question": "Q9?", "answer": "bad", "label": 0},
    {"question_id": 9, "question": "Q9?", "answer": "worse", "label": "rejected"},
]


def test_pair_key_pairs_labelled_rows(tmp_path):
    path = write(tmp_path / "single.jsonl.gz", LABELLED)
    groups = load_preferences(path, pair_key="question_id").groups
    assert [(g.group_id, g.kind) for g in groups] == [("7", "pair"), ("9", "best_of_n")]
    assert (groups[0].prompt, groups[0].chosen, groups[0].rejected) == (
        user("Q7?"),
        ("right",),
        ("wrong",),
    )
    assert groups[1].chosen == ("good",) and groups[1].rejected == ("bad", "worse")
    assert groups[0].meta == {"question_id": 7, "source": "s", "rows": [1, 3]}


def test_string_labels_without_pair_key_point_to_it(tmp_path):
    with pytest.raises(DataError, match=r"row 1: field 'label'.*pair-key"):
        load_preferences(write(tmp_path / "single.jsonl", LABELLED))


@pytest.mark.parametrize(
    ("change", "match", "n_skipped"),
    [
        ({2: {"label": "chosen"}}, r"row 1: field 'label': question_id '7' has no 'rejected'", 1),
        (
            {2: {"question": "Other?"}},
            r"row 3: field 'prompt': differs from the prompt of row 1",
            1,
        ),
        # the bad row is skipped, and then question 7 has no rejected response either
        ({2: {"label": "maybe"}}, r"row 3: field 'label': must be 'chosen' or 'rejected'", 2),
        ({2: {"question_id": None}}, r"row 3: field 'question_id': is missing", 2),
    ],
)
def test_pair_key_errors_name_the_rows(tmp_path, change, match, n_skipped):
    rows = [dict(r) for r in LABELLED]
    for i, fields in change.items():
        rows[i] |= fields
    path = write(tmp_path / "single.jsonl", rows)
    with pytest.raises(DataError, match=match):
        load_preferences(path, pair_key="question_id")
    with pytest.warns(UserWarning, match=f"skipped {n_skipped} malformed"):
        kept = load_preferences(path, pair_key="question_id", skip_malformed=True)
    assert [g.group_id for g in kept.groups] == ["9"]


# ------------------------------------------------------------- group_by prompt


BON_ROWS = [
    {"id": "p1", "prompt": "A?", "chosen": "good", "rejected": "bad1", "source": "x"},
    {"id": "q1", "prompt": "B?", "chosen": "yes", "rejected": "no"},
    {"id": "p2", "prompt": "A?", "chosen": "good", "rejected": "bad2"},
    {"id": "r1", "prompt": "C?", "chosen": ["c1", "c2", "c3"], "rejected": ["d1", "d2", "d3"]},
    {"id": "p3", "prompt": "A?", "chosen": "also good", "rejected": ["bad1", "bad3"]},
    {"id": "r2", "prompt": "C?", "chosen": ["c1", "c2", "c3"], "rejected": ["d1", "d2", "d3"]},
]


def test_group_by_prompt_builds_best_of_n_groups(tmp_path):
    path = write(tmp_path / "rows.jsonl", BON_ROWS)
    groups = load_preferences(path, group_by="prompt").groups
    assert [(g.group_id, g.kind) for g in groups] == [
        ("p1", "best_of_n"),
        ("q1", "pair"),
        ("r1", "rmbench"),
        ("r2", "rmbench"),  # RM-Bench groups are never merged
    ]
    merged = groups[0]
    assert merged.chosen == ("good", "also good")
    assert merged.rejected == ("bad1", "bad2", "bad3")
    assert merged.meta == {"source": "x", "merged_ids": ["p1", "p2", "p3"]}
    assert len(load_preferences(path, group_by="prompt", limit=2).groups) == 2

    _, rows = response_conversations(groups)
    index = PairIndex.from_groups(groups, rows)
    # hand-built: every chosen of p1 against every rejected, then q1, then 3 x 3 per rmbench
    chosen = [0, 0, 0, 1, 1, 1, 5] + [7 + i for i in range(3) for _ in range(3)]
    rejected = [2, 3, 4, 2, 3, 4, 6] + [10 + j for _ in range(3) for j in range(3)]
    chosen += [13 + i for i in range(3) for _ in range(3)]
    rejected += [16 + j for _ in range(3) for j in range(3)]
    reference = PairIndex.from_arrays(
        chosen,
        rejected,
        group=[0] * 6 + [1] + [2] * 9 + [3] * 9,
        kind=np.array([1] * 6 + [0] + [2] * 18),
        chosen_index=[0, 0, 0, 1, 1, 1, 0] + [i for i in range(3) for _ in range(3)] * 2,
        rejected_index=[0, 1, 2, 0, 1, 2, 0] + [j for _ in range(3) for j in range(3)] * 2,
        group_ids=["p1", "q1", "r1", "r2"],
    )
    for name in ("chosen_row", "rejected_row", "group", "kind", "chosen_index", "rejected_index"):
        assert getattr(index, name).tolist() == getattr(reference, name).tolist(), name
    assert index.group_ids == reference.group_ids
    # best-of-N: p1 is right only when both chosen beat all three rejected
    rewards = np.zeros(index.n_rows)
    rewards[[0, 1]] = [5.0, 4.0]
    rewards[[2, 3, 4]] = [1.0, 4.0, 0.0]  # bad2 ties "also good": wrong
    assert best_of_n_accuracy(rewards, index) == 0.0
    rewards[3] = 3.9
    assert best_of_n_accuracy(rewards, index) == 1.0


def test_group_by_prompt_refuses_contradicting_pairs(tmp_path):
    rows = [
        {"id": "a", "prompt": "P?", "chosen": "x", "rejected": "y"},
        {"id": "b", "prompt": "P?", "chosen": "y", "rejected": "z"},
        {"id": "c", "prompt": "Q?", "chosen": "x", "rejected": "y", "subset": "one"},
        {"id": "d", "prompt": "Q?", "chosen": "x", "rejected": "z", "subset": "two"},
        {"id": "e", "prompt": "R?", "chosen": "x", "rejected": "y"},
    ]
    path = write(tmp_path / "rows.jsonl", rows)
    with pytest.raises(DataError, match=r"rows\.jsonl: field 'chosen': groups 'a', 'b' .*'y'"):
        load_preferences(path, group_by="prompt")
    with pytest.warns(UserWarning, match="skipped 2 malformed"):
        kept = load_preferences(path, group_by="prompt", skip_malformed=True)
    assert [g.group_id for g in kept.groups] == ["e"] and kept.n_skipped == 2
    assert "not a subset (one, two)" in kept.skipped[1]


def test_group_by_and_pair_key_compose_and_check_arguments(tmp_path):
    rows = [dict(r, question="Same?") for r in LABELLED]
    path = write(tmp_path / "single.jsonl", rows)
    groups = resolve_data(str(path), pair_key="question_id", group_by="prompt").groups
    assert len(groups) == 1 and groups[0].rejected == ("wrong", "bad", "worse")
    with pytest.raises(ValueError, match="group_by must be one of"):
        load_preferences(path, group_by="question")
    with pytest.raises(ValueError, match="pair_key applies to files"):
        resolve_data("demo:test", pair_key="question_id")
    demo = resolve_data("demo:test", group_by="prompt")
    assert demo.groups and len(demo.groups) <= len(resolve_data("demo:test").groups)


def test_regroup_with_nothing_left_warns(tmp_path):
    contradicting = load_preferences(
        write(
            tmp_path / "c.jsonl",
            [
                {"id": "a", "prompt": "P?", "chosen": "x", "rejected": "y"},
                {"id": "b", "prompt": "P?", "chosen": "y", "rejected": "x"},
            ],
        )
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = regroup_by_prompt(contradicting, skip_malformed=True)
    assert out.groups == [] and out.n_skipped == 1
    assert any("no preference data" in str(w.message) for w in caught)


# ------------------------------------------------------------------- bootstrap


def _index_and_rewards(seed: int, n_groups: int, per_group: int = 3):
    """Random groups of ``per_group`` pairs each; rewards with a mild signal."""
    rng = np.random.default_rng(seed)
    n_pairs = n_groups * per_group
    rewards = rng.normal(size=2 * n_pairs)
    rewards[0::2] += 0.4
    index = PairIndex.from_arrays(
        np.arange(0, 2 * n_pairs, 2),
        np.arange(1, 2 * n_pairs, 2),
        group=np.repeat(np.arange(n_groups), per_group),
    )
    return index, rewards


def _numpy_bootstrap(correct_by_group: list[list[bool]], n: int, seed: int) -> tuple[float, float]:
    """The documented procedure, written out one resample at a time."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        drawn = rng.integers(0, len(correct_by_group), size=len(correct_by_group))
        hits = sum(sum(correct_by_group[g]) for g in drawn)
        pairs = sum(len(correct_by_group[g]) for g in drawn)
        values.append(hits / pairs)
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)


def test_bootstrap_matches_an_independent_computation():
    index, rewards = _index_and_rewards(seed=1, n_groups=40)
    correct = rewards[index.chosen_row] > rewards[index.rejected_row]
    by_group = [list(correct[index.group == g]) for g in range(40)]
    expected = _numpy_bootstrap(by_group, 500, seed=3)
    assert bootstrap_interval(rewards, index, n_resamples=500, seed=3) == pytest.approx(expected)
    # a subset of pairs: only the groups it touches are resampled
    mask = index.group >= 25
    sub = _numpy_bootstrap(by_group[25:], 300, seed=4)
    got = bootstrap_interval(rewards, index, pairs=mask, n_resamples=300, seed=4)
    assert got == pytest.approx(sub)
    summary = accuracy_interval(rewards, index, pairs=mask, n_resamples=300, seed=4)
    assert summary["ci95"] == pytest.approx(list(sub))
    assert summary["n_pairs"] == int(mask.sum()) and summary["n_prompts"] == 15


def test_bootstrap_resamples_prompts_shared_by_groups(tmp_path):
    index, rewards = _index_and_rewards(seed=6, n_groups=30)
    clusters = np.arange(30) // 3  # every 3 groups share a prompt: 10 prompts
    correct = rewards[index.chosen_row] > rewards[index.rejected_row]
    by_prompt = [list(correct[clusters[index.group] == c]) for c in range(10)]
    got = bootstrap_interval(rewards, index, clusters=clusters, n_resamples=400, seed=1)
    assert got == pytest.approx(_numpy_bootstrap(by_prompt, 400, seed=1))
    assert got != bootstrap_interval(rewards, index, n_resamples=400, seed=1)
    summary = accuracy_interval(rewards, index, clusters=clusters, n_resamples=400, seed=1)
    assert summary["n_prompts"] == 10 and summary["ci95"] == pytest.approx(list(got))
    groups = load_preferences(write(tmp_path / "g.jsonl", BON_ROWS)).groups
    assert prompt_clusters(groups).tolist() == [0, 1, 0, 2, 0, 2]
    with pytest.raises(ValueError, match="one integer per group"):
        bootstrap_interval(rewards, index, clusters=clusters[:5])


def test_bootstrap_contains_the_estimate_and_narrows_with_more_data():
    small, r_small = _index_and_rewards(seed=2, n_groups=30)
    large, r_large = _index_and_rewards(seed=2, n_groups=600)
    for index, rewards in ((small, r_small), (large, r_large)):
        low, high = bootstrap_interval(rewards, index)
        assert low <= pairwise_accuracy(rewards, index) <= high
    width = [
        np.subtract(*bootstrap_interval(r, i)[::-1])
        for i, r in ((small, r_small), (large, r_large))
    ]
    assert width[1] < width[0] / 2
    assert bootstrap_interval(r_small, small, seed=5) == bootstrap_interval(r_small, small, seed=5)
    assert bootstrap_interval(r_small, small, pairs=np.zeros(small.n_pairs, bool)) is None
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_interval(r_small, small, n_resamples=0)


def test_accuracy_by_labels_each_group():
    index = PairIndex.from_arrays([0, 2, 4, 6], [1, 3, 5, 7], group=[0, 0, 1, 2])
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 1.0, 1.0, 1.0])
    table = accuracy_by(rewards, index, ["a", "b", None], n_resamples=50)
    assert {k: (v["accuracy"], v["n_pairs"], v["n_prompts"]) for k, v in table.items()} == {
        "a": (0.5, 2, 1),
        "b": (1.0, 1, 1),
        "(none)": (0.0, 1, 1),  # a tie counts as wrong
    }
    with pytest.raises(ValueError, match="one label per group"):
        accuracy_by(rewards, index, ["a"])


def test_length_baselines_by_hand():
    responses = ["short", "a much longer one", "same!", "same?", "xy", "x"]
    index = PairIndex.from_arrays([0, 2, 4], [1, 3, 5])
    shorter = length_rewards(responses, longer_wins=False)
    longer = length_rewards(responses, longer_wins=True)
    assert shorter.tolist() == [-5, -17, -5, -5, -2, -1]
    # pair 0: chosen shorter; pair 1: same length (a tie, wrong); pair 2: chosen longer
    assert pairwise_accuracy(shorter, index) == pytest.approx(1 / 3)
    assert pairwise_accuracy(longer, index) == pytest.approx(1 / 3)


# ------------------------------------------------------------------- real data


def _readme_counts() -> dict[str, int]:
    text = (SHARED_PREFS / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\S+\.jsonl\.gz) \| ([\d,]+) \|", text, flags=re.M)
    return {name: int(count.replace(",", "")) for name, count in rows}


@pytest.mark.skipif(
    not (SHARED_PREFS / "README.md").is_file(),
    reason=f"shared preference data not found at {SHARED_PREFS} (set SARM_SHARED_DATA)",
)
def test_real_preference_files_load_with_readme_counts():
    counts = _readme_counts()
    assert len(counts) == 8 and sum(counts.values()) == 18_649
    for name, n_pairs in counts.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a few rows have an empty response: counted below
            result = load_preferences(SHARED_PREFS / name, skip_malformed=True)
        assert len(result.groups) + result.n_skipped == n_pairs, name
        assert all(reason.endswith("is empty") for reason in result.skipped), name
        assert result.n_skipped <= 0.07 * n_pairs, name
        source = name.removesuffix(".jsonl.gz")
        assert {g.meta["source"] for g in result.groups} == {source}
        assert all(g.meta["category"] and g.kind == "pair" for g in result.groups)
        if source == "hh_rlhf_harmless":
            assert all(g.prompt[-1]["role"] == "user" for g in result.groups)
            assert sum(len(g.prompt) > 1 for g in result.groups) > 1000
            first = result.groups[0].prompt
            assert first[0] == {
                "role": "user",
                "content": "what are some pranks with a pen i can do?",
            }
            assert first[1] == {
                "role": "assistant",
                "content": "Are you looking for practical joke ideas?",
            }
            separators = ("\n\nHuman:", "\n\nAssistant:")
            assert not any(
                s in m["content"] for g in result.groups for m in g.prompt for s in separators
            )
