"""Preference data loaders: every row shape, every container, every malformed row."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sarm.data import (
    DataError,
    LoadResult,
    groups_from_records,
    load_preferences,
    resolve_data,
    save_jsonl,
)
from sarm.types import PreferenceGroup

SHARED_DATA = Path(
    os.environ.get("SARM_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
RMBENCH_FILES = {
    "rmbench_chat.json": 129,
    "rmbench_code.json": 228,
    "rmbench_safety-refuse.json": 284,
    "rmbench_safety-response.json": 157,
}
FORMATS = ("jsonl", "json", "json_data", "parquet", "hf")


def user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def write_rows(tmp_path: Path, rows: list[dict], fmt: str, name: str = "prefs") -> Path:
    """Write ``rows`` in one of the supported containers and return the path."""
    if fmt == "jsonl":
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt in ("json", "json_data"):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(rows if fmt == "json" else {"data": rows}), encoding="utf-8")
    elif fmt == "parquet":
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path = tmp_path / name
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


# ------------------------------------------------------------------ shapes

PAIR_ROWS = [
    {"id": "a", "prompt": "Say hi.", "chosen": "Hi!", "rejected": "No.", "subset": "greet"},
    {"id": "b", "prompt": "Add 2 and 2.", "chosen": "4", "rejected": "5", "subset": "math"},
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_pair_rows_in_every_container(tmp_path, fmt):
    result = load_preferences(write_rows(tmp_path, PAIR_ROWS, fmt))
    expected = [
        PreferenceGroup("a", user("Say hi."), ("Hi!",), ("No.",), "greet", "pair"),
        PreferenceGroup("b", user("Add 2 and 2."), ("4",), ("5",), "math", "pair"),
    ]
    assert result.groups == expected
    assert result.n_skipped == 0 and result.skipped == []
    assert result.source.endswith(("prefs.jsonl", "prefs.json", "prefs.parquet", "prefs"))


CHAT_ROWS = [
    {  # Anthropic-HH style: whole conversations, multi-turn shared prefix
        "chosen": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "An apple."},
        ],
        "rejected": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Name a fruit."},
            {"role": "assistant", "content": "A chair."},
        ],
    },
    {  # UltraFeedback style: prompt string repeated inside the conversations
        "prompt": "What is 3 x 3?",
        "chosen": [
            {"role": "user", "content": "What is 3 x 3?"},
            {"role": "assistant", "content": "9"},
        ],
        "rejected": [
            {"role": "user", "content": "What is 3 x 3?"},
            {"role": "assistant", "content": "6"},
        ],
    },
    {  # prompt as messages, responses as lone assistant messages
        "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sky?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    },
]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "hf"])
def test_chat_message_rows_take_the_shared_prefix_as_prompt(tmp_path, fmt):
    rows = [dict(r, prompt=r.get("prompt")) for r in CHAT_ROWS] if fmt != "jsonl" else CHAT_ROWS
    if fmt != "jsonl":  # columnar formats need one type per column: give every prompt as messages
        rows[1]["prompt"] = list(user("What is 3 x 3?"))
    groups = load_preferences(write_rows(tmp_path, rows, fmt, "chat")).groups
    hh, uf, sys_ = groups
    assert hh.prompt == (
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Name a fruit."},
    )
    assert (hh.chosen, hh.rejected, hh.kind) == (("An apple.",), ("A chair.",), "pair")
    assert hh.prompt_text == "Name a fruit."
    assert uf.prompt == user("What is 3 x 3?") and (uf.chosen, uf.rejected) == (("9",), ("6",))
    assert sys_.prompt[0] == {"role": "system", "content": "Be brief."}
    assert (sys_.chosen, sys_.rejected) == (("Blue.",), ("Green.",))
    assert [g.group_id for g in groups] == ["chat:1", "chat:2", "chat:3"]


def test_rewardbench2_and_rmbench_rows(tmp_path):
    rows = [
        {
            "id": 7,
            "prompt": "p1",
            "chosen": ["good"],
            "rejected": ["b1", "b2", "b3"],
            "subset": "Math",
        },
        {
            "id": 8,
            "prompt": "p2",
            "chosen": ["c1", "c2", "c3"],
            "rejected": ["r1", "r2", "r3"],
            "subset": "chat",
            "language": "en",
            "error_key": "x",
        },
        {"id": 9, "prompt": "p3", "chosen": ["c"], "rejected": ["r"]},
        {
            "id": 10,
            "prompt": "p4",
            "chosen": ["c1", "c2", "c3"],
            "rejected": ["r1", "r2", "r3"],
            "kind": "best_of_n",
        },
        {
            "id": 11,
            "prompt": "p5",
            "chosen": ["c1", "c2"],
            "rejected": ["r1", "r2", "r3", "r4"],
            "category": "ties",
        },
    ]
    groups = load_preferences(write_rows(tmp_path, rows, "json")).groups
    assert [g.kind for g in groups] == ["best_of_n", "rmbench", "pair", "best_of_n", "best_of_n"]
    assert [g.group_id for g in groups] == ["7", "8", "9", "10", "11"]
    assert groups[0].rejected == ("b1", "b2", "b3") and groups[0].subset == "Math"
    assert groups[1].meta == {"language": "en", "error_key": "x"}
    assert groups[4].subset == "ties" and groups[4].chosen == ("c1", "c2")


def test_single_response_rows(tmp_path):
    rows = [
        {"question": "q1", "answer": "a1", "label": 1},
        {"question": "q2", "answer": "a2", "label": False},
        {"prompt": "q3", "response": "a3", "label": 0.25, "category": "c"},
        {"prompt": "q4", "response": "a4"},
    ]
    groups = load_preferences(write_rows(tmp_path, rows, "jsonl", "single")).groups
    assert all(g.kind == "single" and g.rejected == () for g in groups)
    assert [g.chosen for g in groups] == [("a1",), ("a2",), ("a3",), ("a4",)]
    assert [g.label for g in groups] == [1.0, 0.0, 0.25, None]
    assert groups[2].subset == "c" and groups[0].prompt == user("q1")
    assert groups[0].responses() == [("single", 0, "a1")]


def test_groups_from_records_and_limit():
    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(5)]
    result = groups_from_records(rows, "memory rows", limit=3)
    assert [g.group_id for g in result.groups] == [
        "memory rows:1",
        "memory rows:2",
        "memory rows:3",
    ]
    assert result.source == "memory rows"
    with pytest.raises(ValueError, match="limit"):
        groups_from_records(rows, "x", limit=-1)


# --------------------------------------------------------------- malformed

GOOD = '{"id": "g%d", "prompt": "p", "chosen": "c", "rejected": "r"}'
MALFORMED = [
    ("bad_json", b'{"prompt": "p", "chosen": "c",', None, "invalid JSON"),
    ("missing_field", b'{"prompt": "p", "chosen": "c"}', "rejected", "is missing"),
    ("missing_prompt", b'{"chosen": "c", "rejected": "r"}', "prompt", "is missing"),
    ("wrong_type", b'{"prompt": "p", "chosen": 5, "rejected": "r"}', "chosen", "must be a string"),
    ("empty_text", b'{"prompt": "  ", "chosen": "c", "rejected": "r"}', "prompt", "is empty"),
    (
        "empty_item",
        b'{"prompt": "p", "chosen": ["c", ""], "rejected": ["r"]}',
        "chosen[1]",
        "is empty",
    ),
    ("non_utf8", b'{"prompt": "caf\xe9", "chosen": "c", "rejected": "r"}', None, "UTF-8"),
    ("surrogate", b'{"prompt": "\\ud800", "chosen": "c", "rejected": "r"}', "prompt", "UTF-8"),
    ("not_object", b'["p", "c", "r"]', None, "must be a JSON object"),
    ("bad_label", b'{"question": "q", "answer": "a", "label": "good"}', "label", "number"),
    ("bad_kind", b'{"prompt": "p", "chosen": "c", "rejected": "r", "kind": "x"}', "kind", "one of"),
    (
        "rmbench_shape",
        b'{"prompt": "p", "chosen": ["a"], "rejected": ["b", "c", "d"], "kind": "rmbench"}',
        "chosen",
        "exactly 3",
    ),
    (
        "chat_not_assistant",
        b'{"chosen": [{"role": "user", "content": "x"}], '
        b'"rejected": [{"role": "user", "content": "y"}], "prompt": "p"}',
        "chosen[0].role",
        "assistant",
    ),
    (
        "chat_missing_content",
        b'{"chosen": [{"role": "assistant"}], "rejected": '
        b'[{"role": "assistant", "content": "y"}], "prompt": "p"}',
        "chosen[0].content",
        "missing",
    ),
    (
        "chat_prefix_differs",
        b'{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", '
        b'"content": "x"}], "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", '
        b'"content": "y"}]}',
        "rejected",
        "differ",
    ),
    (
        "chat_prompt_mismatch",
        b'{"prompt": "zzz", "chosen": [{"role": "user", "content": "a"}, '
        b'{"role": "assistant", "content": "x"}], "rejected": [{"role": "user", "content": "a"}, '
        b'{"role": "assistant", "content": "y"}]}',
        "prompt",
        "does not match",
    ),
    (
        "duplicate_id",
        b'{"id": "g1", "prompt": "p", "chosen": "c", "rejected": "r"}',
        "id",
        "duplicate id 'g1' (first used in row 1)",
    ),
]


def malformed_file(tmp_path: Path, bad: bytes) -> Path:
    """Line 1 and 2 good, line 3 blank, line 4 the bad row, line 5 good."""
    lines = [(GOOD % 1).encode(), (GOOD % 2).encode(), b"", bad, (GOOD % 5).encode()]
    path = tmp_path / "broken.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    ("case", "bad", "field", "problem"), MALFORMED, ids=[m[0] for m in MALFORMED]
)
def test_malformed_row_names_file_row_and_field(tmp_path, case, bad, field, problem):
    path = malformed_file(tmp_path, bad)
    with pytest.raises(DataError) as info:
        load_preferences(path)
    err = info.value
    message = str(err)
    assert "broken.jsonl" in message and "row 4" in message and problem in message
    assert (err.row, err.field) == (4, field)
    if field is not None:
        assert f"field {field!r}" in message


def test_skip_malformed_counts_and_warns(tmp_path):
    lines = [GOOD % 1, "{oops", GOOD % 3, '{"prompt": "p", "chosen": "c"}', GOOD % 1, GOOD % 6]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"mixed.jsonl: skipped 3 malformed row\(s\)"):
        result = load_preferences(path, skip_malformed=True)
    assert [g.group_id for g in result.groups] == ["g1", "g3", "g6"]
    assert result.n_skipped == 3
    assert [s.split(": ")[1] for s in result.skipped] == ["row 2", "row 4", "row 5"]


def test_no_warning_when_nothing_skipped(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            len(
                load_preferences(
                    write_rows(tmp_path, PAIR_ROWS, "jsonl"), skip_malformed=True
                ).groups
            )
            == 2
        )


def test_json_row_numbers_are_list_positions(tmp_path):
    rows = [*PAIR_ROWS, {"id": "c", "prompt": "p", "chosen": ["x"], "rejected": []}]
    with pytest.raises(
        DataError,
        match=r"prefs\.json: row 3: field 'rejected': a \w+ row needs at least one response",
    ):
        load_preferences(write_rows(tmp_path, rows, "json"))


def test_parquet_and_hf_row_numbers(tmp_path):
    rows = [*PAIR_ROWS, {"id": "c", "prompt": "p", "chosen": "", "rejected": "r", "subset": "s"}]
    for fmt in ("parquet", "hf"):
        with pytest.raises(DataError, match=r"row 3: field 'chosen': is empty"):
            load_preferences(write_rows(tmp_path, rows, fmt, f"bad_{fmt}"))


def test_whole_file_errors(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl"):
        load_preferences(missing)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"unknown data format '\.csv'"):
        load_preferences(tmp_path / "x.csv")
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(DataError, match=r"bad\.json: expected a list of rows"):
        load_preferences(tmp_path / "bad.json", skip_malformed=True)
    (tmp_path / "trunc.json").write_text('[{"prompt": "p",')
    with pytest.raises(DataError, match=r"trunc\.json: invalid JSON at line 1"):
        load_preferences(tmp_path / "trunc.json")
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(ValueError, match=r"not a dataset saved with datasets\.save_to_disk"):
        load_preferences(tmp_path / "plain_dir")


def test_hf_dataset_dict_asks_for_a_split(tmp_path):

    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(PAIR_ROWS)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"several splits \['train'\]"):
        load_preferences(tmp_path / "dd")
    assert len(load_preferences(tmp_path / "dd" / "train").groups) == 2


def test_limit_stops_reading(tmp_path):
    lines = [GOOD % 1, GOOD % 2, "{broken"]
    path = tmp_path / "lim.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert [g.group_id for g in load_preferences(path, limit=2).groups] == ["g1", "g2"]


# ------------------------------------------------------------------ saving


def test_save_jsonl_round_trip_is_lossless(tmp_path):
    groups = [
        PreferenceGroup("p", user("hi"), ("a",), ("b",), "s1", "pair", meta={"split": "train"}),
        PreferenceGroup(
            "b",
            ({"role": "system", "content": "sys"}, *user("q")),
            ("c",),
            ("r1", "r2", "r3"),
            None,
            "best_of_n",
        ),
        PreferenceGroup(
            "m",
            user("q2"),
            ("c1", "c2", "c3"),
            ("r1", "r2", "r3"),
            "chat",
            "rmbench",
            meta={"language": "en"},
        ),
        PreferenceGroup("x", user("q3"), ("1", "2", "3"), ("4", "5", "6"), None, "best_of_n"),
        PreferenceGroup("s", user("q4"), ("only",), (), "single-set", "single", label=0.5),
        PreferenceGroup("u", user("héllo ✓"), ("naïve",), ("日本",), None, "pair", label=1.0),
    ]
    path = tmp_path / "out" / "groups.jsonl"
    assert save_jsonl(groups, path) == path
    loaded = load_preferences(path).groups
    assert loaded == groups
    assert [g.meta for g in loaded] == [g.meta for g in groups]
    assert sorted(p.name for p in path.parent.iterdir()) == ["groups.jsonl"]  # no temp files left
    save_jsonl(groups[:2], path)  # atomic overwrite
    assert load_preferences(path).groups == groups[:2]


def test_save_jsonl_failure_keeps_old_file(tmp_path):
    path = tmp_path / "keep.jsonl"
    save_jsonl([PreferenceGroup("a", user("p"), ("c",), ("r",))], path)
    before = path.read_bytes()
    bad = PreferenceGroup("b", user("p"), ("c",), ("r",), meta={"obj": object()})
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_jsonl([bad], path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.jsonl"]


# ---------------------------------------------------------------- resolver


def test_resolve_data_demo_and_paths(tmp_path):
    train, test, every = (resolve_data(f"demo:{s}") for s in ("train", "test", "all"))
    assert isinstance(train, LoadResult) and train.source == "demo:train"
    assert len(train.groups) + len(test.groups) == len(every.groups) >= 800
    assert {g.group_id for g in train.groups}.isdisjoint(g.group_id for g in test.groups)
    assert len(resolve_data("demo:test", limit=5).groups) == 5
    with pytest.raises(ValueError, match="unknown demo split 'demo:dev'"):
        resolve_data("demo:dev")
    path = write_rows(tmp_path, PAIR_ROWS, "jsonl")
    assert resolve_data(str(path)).groups == load_preferences(path).groups
    with pytest.raises(FileNotFoundError):
        resolve_data(str(tmp_path / "absent.json"))


# --------------------------------------------------------- real RM-Bench data


@pytest.mark.skipif(
    not SHARED_DATA.is_dir(),
    reason=f"shared benchmark data not found at {SHARED_DATA} (set SARM_SHARED_DATA)",
)
@pytest.mark.parametrize(("name", "n_prompts"), sorted(RMBENCH_FILES.items()))
def test_real_rmbench_files(name, n_prompts):
    path = SHARED_DATA / name
    raw = json.loads(path.read_text(encoding="utf-8"))
    result = load_preferences(path)
    assert len(result.groups) == len(raw) == n_prompts and result.n_skipped == 0
    for row, g in zip(raw, result.groups, strict=True):
        assert g.kind == "rmbench" and len(g.chosen) == 3 and len(g.rejected) == 3
        assert (g.group_id, g.subset) == (str(row["id"]), row["subset"])
        assert g.prompt == user(row["prompt"])
        assert (list(g.chosen), list(g.rejected)) == (row["chosen"], row["rejected"])
        extra = set(row) - {"id", "subset", "prompt", "chosen", "rejected"}
        assert g.meta == {k: row[k] for k in extra}
