"""The single-process `sarm index` never imports Ray (Ray is an optional extra)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_store_shards import make_groups

from feature_store import FeatureStore
from sarm.data import save_jsonl
from workflows.cli import main as sarm_main

ROOT = Path(__file__).resolve().parents[2]


def test_single_process_index_never_imports_ray(tmp_path):
    """It also reads --data from a URI (file:// here; s3:// and gs:// the same way)."""
    from helpers import make_tiny_sarm

    from sarm.checkpoints import save_sarm

    model_dir = save_sarm(make_tiny_sarm(tmp_path / "tiny", seed=5), tmp_path / "model")
    data = save_jsonl(make_groups(), tmp_path / "data.jsonl")
    store = tmp_path / "local.duckdb"
    code = (
        "import sys\n"
        "from workflows.cli import main\n"
        f"rc = main(['index', '--model', {str(model_dir)!r}, '--data', {data.resolve().as_uri()!r}, "
        f"'--store', {str(store)!r}, '--quiet'])\n"
        "assert rc == 0, rc\n"
        "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
        "assert not loaded, loaded\n"
        "print('no ray')\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "no ray" in done.stdout
    with FeatureStore.open_for_reading(store) as s:
        assert s.summary()["complete"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["index", "--model", "m", "--data", "x", "--store", "s", "--address", "auto"],
            "need --engine ray",
        ),
        (
            ["index", "--model", "m", "--data", "x", "--store", "s", "--num-workers", "2"],
            "need --engine ray",
        ),
        (["index", "--engine", "ray", "--merge", "p", "--store", "s"], "--engine ray takes"),
        (
            ["index", "--engine", "ray", "--model", "m", "--data", "x"],
            "needs --model, --data and --store",
        ),
    ],
)
def test_ray_flags_are_checked_before_anything_runs(argv, match, capsys):
    assert sarm_main(argv) == 2
    assert match in capsys.readouterr().err


def test_data_from_a_uri_is_copied_byte_for_byte(tmp_path):
    from workflows.commands.index import fetched

    data = save_jsonl(make_groups(), tmp_path / "data.jsonl.gz")
    (tmp_path / "copy").mkdir()
    local = fetched(data.resolve().as_uri(), tmp_path / "copy")
    assert local.endswith("data.jsonl.gz") and Path(local).read_bytes() == data.read_bytes()
    assert fetched(str(data), tmp_path) == str(data)  # plain paths are read where they are
    with pytest.raises(FileNotFoundError, match="cannot read it"):
        fetched((tmp_path / "missing.jsonl").as_uri(), tmp_path / "copy")
