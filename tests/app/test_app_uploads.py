"""Add data: parsing an upload (every format, malformed rows listed), the new store's name,
and the background `sarm index` job (start, progress, cancel, finish, switch) through AppTest."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
import pytest
from test_app_pages import env, frame_with, go, start, store_path  # noqa: F401

from app import state, text, uploads
from feature_store import FeatureStore
from feature_store.store import PARTIAL_SUFFIX

GOOD = [
    {"prompt": "Name a fruit.", "chosen": "An apple.", "rejected": "A chair.", "subset": "s1"},
    {"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "No.", "subset": "s2"},
]
BAD = {"prompt": "Missing its rejected answer.", "chosen": "Here."}
CHAT = [
    {"role": "user", "content": "What is tea?"},
    {"role": "assistant", "content": "Leaves in water."},
]
CHAT_BAD = [CHAT[0], {"role": "assistant", "content": "Rocks."}]


def jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# --------------------------------------------------------------------------- plain logic


def test_jsonl_rows_are_parsed_and_malformed_rows_listed(tmp_path):
    parsed = uploads.parse_upload("my data.jsonl", jsonl([GOOD[0], BAD, GOOD[1]]), tmp_path)
    assert parsed.name == "my_data.jsonl"
    assert [g.group_id for g in parsed.groups] == ["my_data:1", "my_data:3"]
    assert parsed.n_responses == 4
    assert len(parsed.skipped) == 1
    reason = parsed.skipped[0]
    assert reason.startswith("my_data.jsonl: row 2") and str(tmp_path) not in reason
    table = parsed.preview()
    assert table["chosen"].tolist() == ["An apple.", "Hi there!"]
    assert table["subset"].tolist() == ["s1", "s2"]
    assert parsed.skipped_table()["reason"].tolist() == parsed.skipped


def test_json_parquet_and_csv_read_the_same_rows(tmp_path):
    as_json = uploads.parse_upload("d.json", json.dumps(GOOD).encode(), tmp_path / "a")
    buf = io.BytesIO()
    pd.DataFrame(GOOD).to_parquet(buf)
    as_parquet = uploads.parse_upload("d.parquet", buf.getvalue(), tmp_path / "b")
    as_csv = uploads.parse_upload(
        "d.csv", pd.DataFrame(GOOD).to_csv(index=False).encode(), tmp_path / "c"
    )
    for parsed in (as_json, as_parquet, as_csv):
        assert [(g.prompt, g.chosen, g.rejected, g.subset) for g in parsed.groups] == [
            (g.prompt, g.chosen, g.rejected, g.subset) for g in as_json.groups
        ]
        assert not parsed.skipped


def test_csv_cells_may_hold_chats_and_labels(tmp_path):
    frame = pd.DataFrame(
        [
            {"chosen": json.dumps(CHAT), "rejected": json.dumps(CHAT_BAD), "question": None},
            {"chosen": None, "rejected": None, "question": "Tea?", "answer": "Leaves.", "label": 1},
            {"chosen": "only chosen", "rejected": None, "question": None},
        ]
    )
    parsed = uploads.parse_upload("chats.csv", frame.to_csv(index=False).encode(), tmp_path)
    assert [g.kind for g in parsed.groups] == ["pair", "single"]
    assert parsed.groups[0].chosen == ("Leaves in water.",)
    assert parsed.groups[1].label == 1.0
    assert len(parsed.skipped) == 1 and parsed.skipped[0].startswith("chats.csv: row 3")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("data.txt", b"x", "unknown file type"),
        ("broken.json", b"[{", "broken.json: invalid JSON"),
        ("rows.json", b'{"a": 1}', "expected a list of rows"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(tmp_path, name, data, message):
    with pytest.raises(ValueError, match=message) as info:
        uploads.parse_upload(name, data, tmp_path)
    assert str(tmp_path) not in str(info.value)


def test_reshaping_options_reach_the_loader(tmp_path):
    rows = [
        {"question_id": "q1", "question": "Tea?", "answer": "Leaves.", "label": "chosen"},
        {"question_id": "q1", "question": "Tea?", "answer": "Rocks.", "label": "rejected"},
    ]
    plain = uploads.parse_upload("p.jsonl", jsonl(rows), tmp_path / "a")
    assert not plain.groups and len(plain.skipped) == 2
    paired = uploads.parse_upload("p.jsonl", jsonl(rows), tmp_path / "b", pair_key="question_id")
    assert [(g.chosen, g.rejected) for g in paired.groups] == [(("Leaves.",), ("Rocks.",))]
    merged = uploads.parse_upload(
        "m.jsonl",
        jsonl([GOOD[0], {**GOOD[0], "chosen": "A pear."}]),
        tmp_path / "c",
        group_by="prompt",
    )
    assert [g.kind for g in merged.groups] == ["best_of_n"]


def test_a_new_store_name_is_checked(tmp_path):
    assert uploads.new_store_path(tmp_path, "mine") == tmp_path / "mine.duckdb"
    assert uploads.new_store_path(tmp_path, "mine.duckdb") == tmp_path / "mine.duckdb"
    for bad in ("", "../up", "a/b", ".hidden", "x" * 65, "a b"):
        with pytest.raises(ValueError, match="store name"):
            uploads.new_store_path(tmp_path, bad)
    (tmp_path / "taken.duckdb").write_bytes(b"")
    (tmp_path / f"half.duckdb{PARTIAL_SUFFIX}").write_bytes(b"")
    for taken in ("taken", "half"):
        with pytest.raises(ValueError, match="choose a new name"):
            uploads.new_store_path(tmp_path, taken)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="not a folder"):
        uploads.new_store_path(tmp_path / "file", "x")


def test_job_lines():
    running = uploads.JobStatus("running", "indexing", 3, 12)
    assert running.fraction == 0.25 and not running.finished
    assert (
        text.job_line("x.duckdb", running) == "Indexing x.duckdb: indexing (3 of 12 responses), 25%"
    )
    assert uploads.JobStatus("done", "done", 0, 0).fraction == 1.0
    assert "cancelled" in text.job_line("x.duckdb", uploads.JobStatus("cancelled", "", 0, 1))


# --------------------------------------------------------------------------- the page


def upload(at, name: str, data: bytes):
    at.file_uploader(key="adddata_file").upload(name, data).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_page_previews_rows_and_lists_the_bad_ones(store_path):  # noqa: F811
    at = start("add_data")
    assert [t.value for t in at.title] == ["Add data"]
    upload(at, "mine.jsonl", jsonl([GOOD[0], BAD, GOOD[1]]))
    assert frame_with(at, "prompt")["prompt"].tolist() == [
        "user: Name a fruit.",
        "user: Say hi.",
    ]
    reasons = frame_with(at, "reason")["reason"].tolist()
    assert len(reasons) == 1 and reasons[0].startswith("mine.jsonl: row 2")
    summary = text.plain(text.parsed_summary(2, 4, 1))
    assert summary in [m.value for m in at.markdown]
    assert at.text_input(key="adddata_name").value == "mine"


def test_the_page_refuses_an_unreadable_file(store_path):  # noqa: F811
    at = upload(start("add_data"), "broken.json", b"[{")
    assert any("Cannot read this file" in e.value and "broken.json" in e.value for e in at.error)
    assert not at.get("form")


def start_job(at, folder: Path, name: str):
    at.text_input(key="adddata_folder").input(str(folder))
    at.text_input(key="adddata_name").input(name)
    at.button(key="adddata_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state[state.INDEX_JOB]
    assert job.store == folder / f"{name}.duckdb"
    return job


def test_a_job_can_be_cancelled(store_path, tmp_path):  # noqa: F811
    at = upload(start("add_data"), "mine.jsonl", jsonl(GOOD))
    folder = tmp_path / "new"
    job = start_job(at, folder, "cancelled")
    assert job.data.is_file() and job.status().state == "running"
    assert at.button(key="adddata_cancel")  # the live progress, with its cancel button
    assert any(p.proto.text.startswith("Indexing cancelled.duckdb") for p in at.get("progress"))
    at.button(key="adddata_cancel").click().run()
    assert job.proc.poll() is not None and job.status().state == "cancelled"
    assert not list(folder.iterdir())  # no store, partial store or data copy left
    assert any("cancelled" in i.value for i in at.info)
    at.button(key="adddata_dismiss").click().run()
    assert state.INDEX_JOB not in at.session_state
    assert at.file_uploader(key="adddata_file")


def test_a_job_indexes_the_rows_and_the_dashboard_switches_to_them(store_path, tmp_path):  # noqa: F811
    tmp_path = tmp_path / "new"
    rows = [*GOOD, {"prompt": "Count to two.", "chosen": "1, 2.", "rejected": "3.", "subset": "s1"}]
    at = upload(start("add_data"), "mine.jsonl", jsonl(rows))
    job = start_job(at, tmp_path, "mine")
    go(at, "overview")  # the job runs on while other pages are shown
    assert any("Indexing mine.duckdb" in c.value for c in at.sidebar.caption)
    deadline = time.monotonic() + 300
    while not job.status().finished and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job.status().state == "done", job.error()
    go(at, "add_data")
    assert not any(p for p in at.get("progress"))
    at.button(key="adddata_switch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.SOURCES].store == str(tmp_path / "mine.duckdb")
    go(at, "overview")
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "mine.duckdb" in sidebar and "6 responses" in sidebar and "3 pairs" in sidebar
    with FeatureStore.open(tmp_path / "mine.duckdb", read_only=True) as store:
        assert sorted(store.examples_frame()["subset"].unique()) == ["s1", "s2"]
    assert (tmp_path / "mine.data.jsonl").is_file()  # the rows indexed, beside the store
    state.open_store.clear()
