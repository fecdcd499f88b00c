"""The Export page: one created_at per export (downloaded and written manifests are the same
bytes) and a "Wrote ..." message that stays until dismissed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from test_app_downloads import downloads  # noqa: F401
from test_app_pages import env, go, start, store_path  # noqa: F401

import sarm.export
from app import core
from sarm.constants import HEAD_MANIFEST_FILE


class TickingClock:
    """``datetime`` whose ``now`` moves one second per call (so two runs never agree)."""

    t = datetime(2026, 1, 1, tzinfo=timezone.utc)

    @classmethod
    def now(cls, tz=None):
        cls.t += timedelta(seconds=1)
        return cls.t


@pytest.fixture
def ticking(monkeypatch):
    monkeypatch.setattr(sarm.export, "datetime", TickingClock)


def test_export_stamp_is_kept_per_export():
    first = core.export_stamp(None, ("h", "ingest", "", ""), "t1")
    assert first == (("h", "ingest", "", ""), "t1")
    assert core.export_stamp(first, ("h", "ingest", "", ""), "t2") == first
    assert core.export_stamp(first, ("h2", "ingest", "", ""), "t3") == (
        ("h2", "ingest", "", ""),
        "t3",
    )


def test_downloaded_and_written_manifests_are_the_same_bytes(
    store_path,  # noqa: F811
    downloads,  # noqa: F811
    ticking,
    tmp_path,
):
    at = start("export")
    shown = downloads[HEAD_MANIFEST_FILE]
    at.text_input(key="export_head_dir").input(str(tmp_path / "head"))
    at.button(key="export_write_head").click().run()
    assert not at.exception and not at.error
    assert (tmp_path / "head" / HEAD_MANIFEST_FILE).read_bytes() == shown
    assert downloads[HEAD_MANIFEST_FILE] == shown  # and the download did not move either
    at.text_input(key="export_ckpt_dir").input(str(tmp_path / "ckpt"))
    at.button(key="export_write_ckpt").click().run()
    assert (tmp_path / "ckpt" / HEAD_MANIFEST_FILE).read_bytes() == shown
    # another export (a new note) is stamped anew
    at.text_input(key="export_note").input("second").run()
    assert downloads[HEAD_MANIFEST_FILE] != shown


def test_the_wrote_message_stays_until_dismissed(store_path, tmp_path):  # noqa: F811
    at = start("export")
    at.text_input(key="export_head_dir").input(str(tmp_path / "head"))
    at.button(key="export_write_head").click().run()
    wrote = [s.value for s in at.success if s.value.startswith("Wrote ")]
    assert len(wrote) == 1 and "head.safetensors" in wrote[0]
    at.checkbox(key="export_include_backbone").check().run()  # any other interaction
    at.text_input(key="export_author").input("me").run()
    assert [s.value for s in at.success if s.value.startswith("Wrote ")] == wrote
    go(at, "overview")
    go(at, "export")
    assert [s.value for s in at.success if s.value.startswith("Wrote ")] == wrote
    at.button(key="export_notice_dismiss").click().run()
    assert not [s.value for s in at.success if s.value.startswith("Wrote ")]


def test_the_page_shows_the_sarm_serve_command_for_what_was_exported(store_path, tmp_path):  # noqa: F811
    at = start("export")
    codes = [c.value for c in at.code]
    assert any("--store" in c and "--head ingest" in c for c in codes), codes
    at.text_input(key="export_head_dir").input(str(tmp_path / "head"))
    at.button(key="export_write_head").click().run()
    codes = [c.value for c in at.code]
    served = [c for c in codes if f"--head {tmp_path / 'head'}" in c]
    assert served and served[0].startswith("sarm serve --model "), codes
    at.text_input(key="export_ckpt_dir").input(str(tmp_path / "ckpt"))
    at.button(key="export_write_ckpt").click().run()
    codes = [c.value for c in at.code]
    assert f"sarm serve --model {tmp_path / 'ckpt'}" in codes, codes


def test_serve_commands_name_every_way_the_head_left(tmp_path):
    from sarm.head import Head

    head = Head([0.5, -1.0, 2.0], 0.1, name="ingest")
    sources = core.Sources("default", str(tmp_path / "s.duckdb"))
    unedited = core.serve_commands(sources, head)
    assert [c.command for c in unedited] == [
        f"sarm serve --model default --head ingest --store {tmp_path / 's.duckdb'}",
        "sarm serve --model default --head ./head.safetensors",
    ]
    edited = head.edit({1: 0.0})
    written = core.serve_commands(
        sources, edited, "/x/my head", (str(tmp_path / "ck"), edited.hash())
    )
    assert [c.command for c in written] == [
        f"sarm serve --model {tmp_path / 'ck'}",
        "sarm serve --model default --head '/x/my head'",
        "sarm serve --model default --head ./head.safetensors",
    ]
    stale = core.serve_commands(sources, edited, None, (str(tmp_path / "ck"), head.hash()))
    assert [c.what for c in stale] == [
        "a downloaded head.safetensors (give the path you saved it to)"
    ]
