"""Every table of pairs, features or examples downloads as CSV and Parquet, as shown."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from test_app_pages import env, frame_with, go, start, store_path  # noqa: F401

from app import tables


class Downloads(dict):
    """File name -> bytes of the app's download buttons (the latest run's last).

    Immediate downloads are recorded as stored; deferred ones (a callable Streamlit
    runs when the button is clicked) are run when a test reads them, as a click would.
    """

    def __getitem__(self, name: str) -> bytes:
        value = super().__getitem__(name)
        return value() if callable(value) else value


@pytest.fixture
def downloads(monkeypatch):
    """The files the app hands to its download buttons, by file name."""
    files = Downloads()
    original = MemoryMediaFileStorage.load_and_get_id
    original_deferred = MediaFileManager.add_deferred

    def record(self, path_or_data, mimetype, kind, filename=None):
        if filename and isinstance(path_or_data, bytes):
            files[filename] = path_or_data
        return original(self, path_or_data, mimetype, kind, filename)

    def record_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        if file_name:
            files[file_name] = data_callable
        return original_deferred(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", record)
    monkeypatch.setattr(MediaFileManager, "add_deferred", record_deferred)
    return files


def assert_downloads(files: dict[str, bytes], name: str, shown: pd.DataFrame) -> None:
    """``name``.csv and ``name``.parquet hold the table as shown."""
    assert f"{name}.csv" in files and f"{name}.parquet" in files, sorted(files)
    parquet = pd.read_parquet(io.BytesIO(files[f"{name}.parquet"]))
    pd.testing.assert_frame_equal(parquet, shown.reset_index(drop=True), check_dtype=False)
    csv = pd.read_csv(io.BytesIO(files[f"{name}.csv"]), keep_default_na=False)
    assert list(csv.columns) == list(shown.columns) and len(csv) == len(shown)
    for column in ("pair", "feature_id", "example_id", "chosen_id"):
        if column in shown:
            assert csv[column].tolist() == shown[column].tolist()


def test_csv_and_parquet_bytes_round_trip():
    frame = pd.DataFrame({"feature_id": [3, 1], "label": ['a, "b"', None], "x": [0.5, -1.0]})
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(tables.parquet_bytes(frame))), frame)
    back = pd.read_csv(io.BytesIO(tables.csv_bytes(frame)))
    assert back["label"].tolist()[0] == 'a, "b"' and back["feature_id"].tolist() == [3, 1]


def test_every_table_has_csv_and_parquet_downloads(store_path, downloads):  # noqa: F811
    at = start("audit")
    assert_downloads(downloads, "misranked_pairs", frame_with(at, "reward_rejected"))
    assert_downloads(downloads, "misranked_margin_features", frame_with(at, "margin_sum"))
    downloads.clear()
    go(at, "features")
    page_table = at.dataframe(key="features_table").value
    assert_downloads(downloads, "features_page1", page_table)
    fid = int(at.number_input(key="features_fid").value)
    assert_downloads(downloads, f"feature{fid}_top_examples", frame_with(at, "rank"))
    downloads.clear()
    go(at, "explain")
    assert_downloads(downloads, "explain_contributions", frame_with(at, "contribution"))
    downloads.clear()
    go(at, "compare")
    assert_downloads(downloads, "pair_margin_features", frame_with(at, "delta"))
    downloads.clear()
    go(at, "shift")
    assert_downloads(downloads, "shift_features", frame_with(at, "consistency"))
    downloads.clear()
    go(at, "editor")
    at.button(key="editor_add_top").click().run()
    fid = at.session_state["shared_editor_features"][0]
    slider = at.slider(key=f"editor_w_{fid}")
    slider.set_value(float(slider.max) if slider.value < 0 else float(slider.min)).run()
    assert_downloads(downloads, "flipped_pairs", frame_with(at, "margin_before"))
    downloads.clear()
    go(at, "export")
    assert_downloads(downloads, "weight_changes", frame_with(at, "old_weight"))
    keys = {b.key for b in at.get("download_button") if b.key}
    assert {"export_changes_dl_csv", "export_changes_dl_parquet"} <= keys
