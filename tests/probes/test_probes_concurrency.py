"""Store concurrency (issue 10): the dashboard holds the store while others write and read.

The dashboard (an AppTest session in this process, opening the store exactly as
``app.state.open_store`` does) keeps it open while other processes save labels
and head versions, read, score, evaluate and rebuild it with ``sarm index``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest
from app_env import app_groups, build_app_env, copy_store
from streamlit.testing.v1 import AppTest
from streamlit.util import calc_hash

from app import state
from feature_store import FeatureStore, StoreBusyError, StoreReadOnlyError
from feature_store.annotations import annotations_path
from feature_store.synthetic import SyntheticSpec, build_synthetic_store
from sarm.data import save_jsonl

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app" / "main.py")
N_LABELS = 200  # per writer process
SCORE_TEXT = ("--prompt", "Hi", "--response", "Tea.")
SHIFT_FLAGS = ("--target", "subset:chat", "--top", "3", "--json", "--name", "from-the-cli")
HOLD_WRITE_LOCK = (
    "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('ready', flush=True); input()"
)

WORKER = textwrap.dedent(
    """
    import json, sys, time, traceback
    from pathlib import Path
    from feature_store import FeatureStore

    mode, path, tag, ready, go, stop = sys.argv[1:7]
    errors, reads = [], 0
    store = FeatureStore.open(path, read_only=True)  # how every reader and the CLI open it
    d_sae = store.d_sae
    Path(ready).write_text("ok")
    while not Path(go).exists():
        time.sleep(0.005)
    if mode == "write":
        for i in range({n}):
            try:
                store.set_label(i % d_sae, f"{{tag}}-{{i}}", f"written by {{tag}}", author=tag)
            except Exception:
                errors.append(traceback.format_exc())
    else:
        seen = 0
        while not Path(stop).exists() or reads < 5:
            try:
                frame = store.labels_frame(all_versions=True)
                store.features(labelled=True, limit=None)
                store.count_features(search="w")
                store.search_labels("w")
                store.labels_for(list(range(d_sae)))
                store.label_history(reads % d_sae)
                store.example(reads % 10)
                assert len(frame) >= seen, "label versions went missing"
                seen = len(frame)
                reads += 1
            except Exception:
                errors.append(traceback.format_exc())
    store.close()
    print(json.dumps({{"errors": errors, "reads": reads}}))
    """
).format(n=N_LABELS)


def subprocess_env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "app-env"
    root.mkdir(exist_ok=True)
    return build_app_env(root)


@pytest.fixture
def store_path(env, tmp_path, monkeypatch):
    path = copy_store(env, tmp_path / "store.duckdb")
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(path))
    yield path
    state.open_store.clear()  # closes the dashboard's store (on_release)


def dashboard(page: str = "features") -> AppTest:
    """A dashboard session on ``page``: it holds the store open as the app does."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at._page_hash = calc_hash(page)  # the pages are functions: ask for the URL path's hash
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def save_label(at: AppTest, text: str) -> None:
    at.text_input(key="features_label_text").input(text)
    at.text_input(key="features_label_author").input("dashboard")
    at.button(key="features_label_save").click().run()


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workflows.cli", *args],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_two_writers_and_a_reader_while_the_dashboard_holds_the_store(store_path, tmp_path):
    at = dashboard()
    before = len(FeatureStore.open(store_path, read_only=True).labels_frame(all_versions=True))
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    go, stop = tmp_path / "go", tmp_path / "stop"
    roles = [("write", "wa"), ("write", "wb"), ("read", "r")]

    def flags(tag: str) -> list[str]:
        return [str(tmp_path / f"ready-{tag}"), str(go), str(stop)]

    procs = [
        subprocess.Popen(
            [sys.executable, str(script), mode, str(store_path), tag, *flags(tag)],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode, tag in roles
    ]
    deadline = time.monotonic() + 180
    while not all((tmp_path / f"ready-{tag}").exists() for _, tag in roles):
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs]
        assert time.monotonic() < deadline, "the workers did not open the store in 180 s"
        time.sleep(0.05)
    go.write_text("go")
    for i in range(3):  # the dashboard saves labels too, meanwhile
        save_label(at, f"dashboard-{i}")
        assert not at.exception and not at.error, [e.value for e in at.error]
    results = {}
    for (_, tag), proc in zip(roles[:2], procs[:2], strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results[tag] = json.loads(out.strip().splitlines()[-1])
    stop.write_text("stop")
    out, err = procs[2].communicate(timeout=300)
    assert procs[2].returncode == 0, err
    results["r"] = json.loads(out.strip().splitlines()[-1])

    assert {tag: r["errors"] for tag, r in results.items()} == {"wa": [], "wb": [], "r": []}
    assert results["r"]["reads"] >= 5  # 0 reads refused
    every = state.open_store(str(store_path)).labels_frame(all_versions=True)  # the dashboard's
    assert len(every) == before + 2 * N_LABELS + 3  # 0 writes lost
    assert every["label_id"].is_unique and every["label_id"].is_monotonic_increasing
    for tag in ("wa", "wb"):  # each writer's history intact and in its order
        mine = every[every["author"] == tag]
        assert mine["label"].tolist() == [f"{tag}-{i}" for i in range(N_LABELS)]
        assert (mine["description"] == f"written by {tag}").all()
    history = state.open_store(str(store_path)).label_history(5)
    assert {f"wa-{i}" for i in range(5, N_LABELS, 64)} <= set(history["label"])
    assert history["label_id"].is_monotonic_decreasing


@pytest.fixture
def indexed(env, tmp_path, monkeypatch):
    """A store built by ``sarm index`` from a data file, held by a dashboard session."""
    data = save_jsonl(app_groups(), tmp_path / "data.jsonl")
    store = tmp_path / "indexed.duckdb"
    args = ["--model", str(env.model_dir), "--data", str(data), "--store", str(store)]
    args += ["--chunk-size", "16", "--batch-size", "8", "--top-n", "5", "--quiet"]
    done = cli("index", *args)
    assert done.returncode == 0, done.stderr
    monkeypatch.setenv("SARM_MODEL", str(env.model_dir))
    monkeypatch.setenv("SARM_STORE", str(store))
    at = dashboard()
    save_label(at, "kept across rebuilds")
    assert not at.exception and not at.error, [e.value for e in at.error]
    yield at, store, data, args
    state.open_store.clear()


@pytest.mark.parametrize("command", ["index", "eval", "score", "shift", "read-only open"])
def test_commands_run_while_the_dashboard_holds_the_store(indexed, env, command):
    at, store, data, index_args = indexed
    model = str(env.model_dir)
    if command == "read-only open":
        code = (
            "import sys; from feature_store import FeatureStore;"
            "s = FeatureStore.open(sys.argv[1], read_only=True);"
            "print(s.summary()['n_labelled_features'])"
        )
        done = subprocess.run(
            [sys.executable, "-c", code, str(store)],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    else:
        args = {
            "index": index_args,
            "eval": ["--model", model, "--data", str(data), "--json"],
            "score": ["--model", model, "--labels", str(store), *SCORE_TEXT, "--json"],
            "shift": ["--model", model, "--store", str(store), *SHIFT_FLAGS],
        }[command]
        done = cli(command, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Busy" not in done.stderr and "lock" not in done.stderr.lower()
    with FeatureStore.open(store, read_only=True) as reader:  # a fresh reader sees it all
        assert reader.summary()["complete"]
        assert "kept across rebuilds" in set(reader.labels_frame()["label"])
        if command == "shift":
            assert "from-the-cli" in set(reader.head_versions()["name"])
    at.run()  # the dashboard goes on
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert not Path(str(store) + ".partial").exists()


def test_sarm_index_resumes_its_partial_file_and_renames_it_when_done(tmp_path):
    final = tmp_path / "s.duckdb"
    build_synthetic_store(final, SyntheticSpec(n_pairs=10, d_sae=16, nnz=3)).close()
    with FeatureStore.open(final, read_only=True) as reader:  # a reader holds the old file
        with (
            pytest.raises(RuntimeError, match="interrupted"),
            FeatureStore.building(final) as store,
        ):
            store.set_meta({"step": "1"})
            raise RuntimeError("interrupted")
        assert "step" not in FeatureStore.open(final, read_only=True).meta()
        assert Path(str(final) + ".partial").exists()
        with FeatureStore.building(final) as store:
            assert store.meta()["step"] == "1"  # resumed from the partial file
            store.set_meta({"step": "2"})
        assert reader.meta().get("step") is None  # the reader keeps the file it opened
    assert not Path(str(final) + ".partial").exists()
    with FeatureStore.open(final, read_only=True) as fresh:
        assert fresh.meta()["step"] == "2"


def test_a_read_only_store_file_opens_with_labelling_disabled(store_path):
    before = FeatureStore.open(store_path, read_only=True).labels_frame()
    state.open_store.clear()
    store_path.chmod(0o444)
    try:
        at = dashboard()
        notes = [w.value for w in at.sidebar.warning]
        assert any("Labelling is disabled" in n and "read-only" in n for n in notes), notes
        save_label(at, "not saved")
        assert not at.exception
        assert any("not saved" in e.value and "read-only" in e.value for e in at.error)
        store = state.open_store(str(store_path))
        assert not store.can_annotate and "no write permission" in store.annotation_note
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            store.set_label(1, "x")
        assert store.labels_frame()["label"].tolist() == before["label"].tolist()
    finally:
        store_path.chmod(0o644)


def test_busy_store_advice_fits_a_reader(tmp_path):
    path = tmp_path / "s.duckdb"
    build_synthetic_store(path, SyntheticSpec(n_pairs=5, d_sae=8, nnz=2)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the other process says when it holds the write lock (polling with our own
        # opens could take the lock first and make it fail)
        assert holder.stdout.readline().strip() == "ready", holder.stderr.read()
        with pytest.raises(StoreBusyError) as err:
            FeatureStore.open(path, read_only=True)
        assert "read_only=True" not in str(err.value)  # it was read-only already
        assert "wait" in str(err.value) and str(path) in str(err.value)
    finally:
        holder.communicate("\n", timeout=60)


def test_labels_and_heads_of_an_old_store_are_copied_once(tmp_path):
    path = tmp_path / "old.duckdb"
    store = build_synthetic_store(path, SyntheticSpec(n_pairs=5, d_sae=8, nnz=2))
    weights, _ = store.head_weights()
    store.close()
    annotations_path(path).unlink(missing_ok=True)
    with duckdb.connect(str(path)) as con:  # what the library before issue 10 wrote
        for i, label in enumerate(["first", "second", "third"]):
            con.execute(
                "INSERT INTO labels (feature_id, label, description, author, source, created_at) "
                "VALUES (?, ?, '', 'old', 'human', now()::TIMESTAMP + to_seconds(?))",
                [3, label, i],
            )
        con.execute(
            "INSERT INTO head_versions VALUES ('edited', 'ingest', 'n', 'a', '{}', 0.5, ?, now())",
            [(weights * 2).tolist()],
        )
    code = (
        "import sys; from feature_store import FeatureStore;"
        "s = FeatureStore.open(sys.argv[1], read_only=True); print(len(s.label_history(3)))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o.strip() for o, _ in outs] == ["3", "3", "3"], [e for _, e in outs]
    for read_only in (True, False):
        with FeatureStore.open(path, read_only=read_only) as again:
            assert again.label_history(3)["label"].tolist() == ["third", "second", "first"]
            head = again.load_head("edited")
            assert head.parent == "ingest" and (head.weights == weights * 2).all()
            assert sorted(again.head_versions()["name"]) == ["edited", "ingest"]
