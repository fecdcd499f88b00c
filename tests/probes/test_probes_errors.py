"""Issue 10 probes: bad inputs and faults that must end in one clear error line.

Each probe was a traceback, a silent wrong result or a stray file before the
fix. The CLI's contract (``workflows.cli.main``): one line
``sarm COMMAND: error: ...`` naming the file, row or field; exit status 2 for
bad input, 1 for a failure at run time; a traceback only with ``--debug``.
Add new probes to the parametrised tables.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_released_checkpoint
from safetensors.torch import load_file, save_file

from sarm import load_sarm
from sarm.checkpoints import save_sarm
from sarm.data import DataError, groups_from_records, load_preferences
from sarm.errors import CheckpointError, InputError
from sarm.export import edit_manifest, model_info, write_checkpoint
from sarm.head import Head
from sarm.interventions import Intervention, edit_weights, fold_into_head
from workflows.cli import main

MISSING_MODEL = "/nonexistent/sarm-model"  # loading it would fail with "no SARM checkpoint"


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    return make_released_checkpoint(tmp_path_factory.mktemp("probes") / "released")


@pytest.fixture(scope="module")
def ours(released, tmp_path_factory) -> Path:
    return save_sarm(load_sarm(released), tmp_path_factory.mktemp("probes") / "ours")


def broken_copy(src: Path, dst: Path, damage) -> Path:
    shutil.copytree(src, dst)
    damage(dst)
    return dst


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], err


# ------------------------------------------------------------ unreadable model files


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


WEIGHT_FILES = [
    ("released", "model.safetensors"),
    ("ours", "head.safetensors"),
    ("ours", "sae/sae_weights.safetensors"),
]


@pytest.mark.parametrize("damage", [truncate, random_bytes], ids=["truncated", "random-bytes"])
@pytest.mark.parametrize(("layout", "name"), WEIGHT_FILES)
def test_unreadable_safetensors_name_the_file(request, tmp_path, capsys, layout, name, damage):
    src = request.getfixturevalue(layout)
    bad = broken_copy(src, tmp_path / "bad", lambda d: damage(d / name))
    with pytest.raises(CheckpointError, match=Path(name).name) as info:
        load_sarm(bad)
    assert isinstance(info.value, ValueError)  # callers catching ValueError keep working
    rc, _, err = run_cli(["score", "--model", str(bad), "--prompt", "a", "--response", "b"], capsys)
    assert rc == 2
    assert_one_error_line(err, str(bad / name), "truncated or corrupt")


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data)))


def without(key):
    def change(data):
        del data[key]
        return data

    return change


def setting(key, value):
    def change(data):
        data[key] = value
        return data

    return change


BAD_CONFIGS = [
    pytest.param(
        "ours", "sarm.json", without("backbone"), '"backbone" is missing', id="no-backbone"
    ),
    pytest.param("ours", "sarm.json", setting("backbone", [1, 2]), "is a list", id="backbone-list"),
    pytest.param(
        "ours", "sarm.json", setting("backbone", {"name": "x"}), "backbone.layer", id="no-layer"
    ),
    pytest.param("ours", "sae/cfg.json", setting("d_sae", 32), "cfg.json", id="sae-wrong-size"),
    pytest.param(
        "released", "config.json", setting("hidden_size", "64"), "hidden_size", id="hidden-str"
    ),
    pytest.param("released", "config.json", without("vocab_size"), "vocab_size", id="no-vocab"),
    pytest.param(
        "released", "config.json", setting("vocab_size", 300), "model.embed_tokens", id="vocab-off"
    ),
]


@pytest.mark.parametrize(("layout", "name", "change", "message"), BAD_CONFIGS)
def test_bad_checkpoint_configs_are_clear(request, tmp_path, layout, name, change, message):
    src = request.getfixturevalue(layout)
    bad = broken_copy(src, tmp_path / "bad", lambda d: edit_json(d / name, change))
    with pytest.raises(CheckpointError, match=message) as info:
        load_sarm(bad)
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------ data files


def test_deeply_nested_json_line_names_file_and_row(tmp_path):
    path = tmp_path / "deep.jsonl"
    good = json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
    path.write_text(good + "\n" + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match=r"deep.jsonl: row 2: JSON nested too deeply"):
        load_preferences(path)
    with pytest.warns(UserWarning, match="skipped 1 malformed row"):
        assert len(load_preferences(path, skip_malformed=True).groups) == 1


def test_deeply_nested_json_file_names_the_file(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match=r"deep.json: JSON nested too deeply"):
        load_preferences(path)


def test_chosen_equal_to_rejected_warns_naming_rows():
    rows = [
        {"prompt": "p", "chosen": "same", "rejected": "other"},
        {"prompt": "q", "chosen": "same", "rejected": " same "},
    ]
    with pytest.warns(UserWarning, match=r"1 row\(s\) have a chosen response identical.*rows 2"):
        groups_from_records(rows, "mem")


@pytest.mark.parametrize(
    ("lines", "why"),
    [("", "it holds no rows"), ('{"prompt": "p"}\n', "all 1 rows were malformed")],
)
def test_empty_dataset_warns(tmp_path, lines, why):
    path = tmp_path / "empty.jsonl"
    path.write_text(lines)
    with pytest.warns(UserWarning, match=f"no preference data \\({why}\\)"):
        load_preferences(path, skip_malformed=True)


def test_cli_says_a_dataset_is_empty_or_tied(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, _, err = run_cli(["eval", "--model", MISSING_MODEL, "--data", str(empty)], capsys)
    assert f"sarm eval: warning: {empty}: no preference data" in err
    # the data is read and refused before the model is loaded
    assert rc == 2 and "no preference groups to evaluate" in err and "SARM checkpoint" not in err
    tied = tmp_path / "tied.jsonl"
    tied.write_text(json.dumps({"prompt": "p", "chosen": "x", "rejected": "x"}) + "\n")
    _, _, err = run_cli(["eval", "--model", MISSING_MODEL, "--data", str(tied)], capsys)
    assert "sarm eval: warning:" in err and "identical to a rejected one (rows 1)" in err


# ------------------------------------------------------------------ heads and edits


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda h: h.edit({5000: 1.0}), id="edit-5000"),
        pytest.param(lambda h: h.edit({-1: 100.0}), id="edit-negative"),
        pytest.param(lambda h: h.edit({1: float("nan")}), id="edit-nan"),
        pytest.param(lambda h: h.edit({1: 1e39}), id="edit-beyond-float32"),
        pytest.param(lambda h: h.take(np.zeros(8), [5000]), id="take-5000"),
        pytest.param(lambda h: h.take(np.zeros(8), [-1]), id="take-negative"),
        pytest.param(lambda h: h.take(np.full(8, np.nan), [1]), id="take-nan"),
        pytest.param(lambda h: h.take(np.zeros(3), [1]), id="take-short-vector"),
        pytest.param(lambda h: Head(np.array([1.0, np.nan])), id="head-nan"),
        pytest.param(lambda h: Head(np.ones(2), bias=float("inf")), id="head-inf-bias"),
    ],
)
def test_heads_reject_bad_features_and_values(build):
    with pytest.raises(ValueError, match=r"out of range|finite|shape|must be"):
        build(Head(np.arange(8, dtype=np.float32)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("set:1e39@1", "cannot be stored in a float32 head"),
        ("add:-1e39@1", "cannot be stored in a float32 head"),
        ("act_mul:1e39@1", "cannot be stored in a float32 head"),
        ("set:nan@1", "must be finite"),
        ("scale:inf@1", "must be finite"),
        ("set:1@-1", "non-negative"),
    ],
)
def test_actions_reject_values_no_head_can_hold(spec, message):
    with pytest.raises(ValueError, match=message):
        Intervention.parse(spec)


@pytest.mark.parametrize(
    ("apply", "spec"),
    [
        (edit_weights, "scale:1e30@1"),
        (fold_into_head, "scale:1e30@1"),
        (fold_into_head, "act_mul:1e30@1"),
    ],
)
def test_edits_that_overflow_float32_are_refused(apply, spec):
    with pytest.raises(ValueError, match=r"feature\(s\) \[1\] weights beyond float32"):
        apply(np.array([0.0, 1e10, 2.0]), [Intervention.parse(spec)])


def test_shift_cli_refuses_set_1e39_before_loading(tmp_path, capsys):
    argv = ["shift", "--model", MISSING_MODEL, "--store", str(tmp_path / "s.duckdb")]
    rc, out, err = run_cli([*argv, "--target", "subset:x", "--action", "set:1e39"], capsys)
    assert rc == 2 and out == ""
    assert_one_error_line(err, "cannot be stored in a float32 head")


# ------------------------------------------------------------------ the CLI boundary


def test_response_with_invalid_utf8_is_a_clear_error(capsys):
    response = b"ok \xff\xfe".decode("utf-8", "surrogateescape")  # what argv gives
    argv = ["score", "--model", MISSING_MODEL, "--prompt", "hi", "--response", response]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2
    assert_one_error_line(err, "--response is not valid UTF-8 text (byte 0xff at character 3)")


@pytest.fixture(scope="module")
def nan_model(released, tmp_path_factory) -> Path:
    """A released checkpoint whose backbone weights hold NaN (head and SAE are finite)."""
    bad = tmp_path_factory.mktemp("probes") / "nan-backbone"
    shutil.copytree(released, bad)
    tensors = load_file(str(bad / "model.safetensors"))
    tensors["model.layers.0.mlp.down_proj.weight"][:] = float("nan")
    save_file(tensors, str(bad / "model.safetensors"))
    return bad


@pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "table"])
def test_score_of_a_nan_backbone_fails_without_printing_nan(nan_model, capsys, json_flag):
    argv = ["score", "--model", str(nan_model), "--prompt", "hi", "--response", "hello"]
    rc, out, err = run_cli([*argv, *json_flag], capsys)
    assert rc == 2 and out == ""
    assert_one_error_line(
        err, str(nan_model / "model.safetensors"), "layers.0.mlp.down_proj.weight holds NaN"
    )


def test_json_output_is_strict():
    from workflows.commands.flags import json_text

    text = json_text({"reward": float("nan"), "top": [{"c": np.float32("inf")}], "n": 1})
    assert json.loads(text) == {"reward": None, "top": [{"c": None}], "n": 1}


def test_debug_shows_the_traceback(nan_model, capsys):
    argv = ["score", "--model", str(nan_model), "--prompt", "hi", "--response", "hello"]
    rc, _, err = run_cli([*argv, "--debug"], capsys)
    assert rc == 2 and "Traceback" in err and "CheckpointError" in err
    rc, _, err = run_cli(["--debug", *argv], capsys)
    assert rc == 2 and "Traceback" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "ModelConfig.batch_size must be an integer >= 1"),
        (["--chunk-size", "0"], "IndexConfig.chunk_size must be an integer >= 1"),
        (["--top-n", "0"], "IndexConfig.top_n must be an integer >= 1"),
        (["--limit", "-1"], "DataConfig.limit must be an integer >= 0"),
    ],
)
def test_index_checks_arguments_before_loading_and_leaves_no_file(tmp_path, capsys, extra, message):
    store = tmp_path / "x.duckdb"
    argv = ["index", "--model", MISSING_MODEL, "--data", "demo:test", "--store", str(store)]
    rc, _, err = run_cli([*argv, *extra, "--quiet"], capsys)
    assert rc == 2
    assert_one_error_line(err, message)
    assert list(tmp_path.iterdir()) == []


def test_index_checks_the_shard_before_loading(tmp_path, capsys):
    argv = ["index", "--model", MISSING_MODEL, "--data", "demo:test"]
    rc, _, err = run_cli([*argv, "--shard", "5/2", "--parts", str(tmp_path / "p")], capsys)
    assert rc == 2 and "no SARM checkpoint" not in err
    assert_one_error_line(err, "shard index must be < 2, got 5")
    assert list(tmp_path.iterdir()) == []


def test_merge_of_a_missing_parts_dir_leaves_no_store(tmp_path, capsys):
    store = tmp_path / "merged.duckdb"
    argv = ["index", "--merge", str(tmp_path / "no-parts"), "--store", str(store), "--quiet"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2
    assert_one_error_line(err, "no-parts")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["score", "--prompt", "a", "--response", "b", "--labels", "/nonexistent/l.duckdb"],
            "--labels: feature store /nonexistent/l.duckdb does not exist",
        ),
        (
            ["eval", "--data", "demo:test", "--baseline", "/nonexistent/b.safetensors"],
            "head file not found: /nonexistent/b.safetensors",
        ),
    ],
)
def test_named_files_are_checked_before_loading_the_model(capsys, argv, message):
    rc, _, err = run_cli([*argv, "--model", MISSING_MODEL], capsys)
    assert rc == 2
    assert_one_error_line(err, message)


# ------------------------------------------------------------------ exports


def test_exported_checkpoint_has_normal_permissions(released, tmp_path):
    model = load_sarm(released)
    edit = model.head.edit({0: 1.5})
    target = write_checkpoint(model, edit, edit_manifest(edit, model_info(model)), tmp_path / "x")
    umask = os.umask(0)
    os.umask(umask)
    modes = {
        p.relative_to(target).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [target, *target.rglob("*")]
    }
    for name, mode in modes.items():
        expected = (0o777 if (target / name).is_dir() else 0o666) & ~umask
        assert mode == expected, (name, oct(mode), oct(expected))
    assert torch.equal(
        torch.tensor(Head.load(target / "head.safetensors").weights),
        torch.tensor(edit.weights),
    )


def test_input_errors_stay_value_errors():
    assert issubclass(CheckpointError, InputError) and issubclass(InputError, ValueError)
    assert issubclass(DataError, InputError)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset warns about nothing
        groups_from_records([{"prompt": "p", "chosen": "a", "rejected": "b"}], "mem")


def test_a_runtime_failure_exits_1_with_one_line(released, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    parts = tmp_path / "parts"
    worker = ["index", "--model", str(released), "--data", str(data), "--chunk-size", "2"]
    assert main([*worker, "--shard", "0/2", "--parts", str(parts), "--quiet"]) == 0
    capsys.readouterr()
    merge = ["index", "--merge", str(parts), "--store", str(tmp_path / "s.duckdb"), "--quiet"]
    rc, _, err = run_cli(merge, capsys)  # worker 1 has not run: a state, not bad input
    assert rc == 1
    assert_one_error_line(err, "wait for every shard worker to finish")
