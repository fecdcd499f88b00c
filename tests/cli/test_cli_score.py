"""``sarm score`` prints a table or JSON whose numbers are the model's own."""

from __future__ import annotations

import json

import pytest
from helpers import make_released_checkpoint

from sarm import load_sarm
from workflows.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("c") / "m", seed=4)


def test_score_json(ckpt, capsys):
    rc = main(
        [
            "score",
            "--model",
            str(ckpt),
            "--prompt",
            "2+2?",
            "--response",
            "4",
            "--json",
            "--top",
            "3",
        ]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    expected = load_sarm(ckpt).score("2+2?", "4")
    assert out["reward"] == pytest.approx(expected.reward, abs=1e-6)
    assert len(out["top"]) == 3
    total = sum(t["contribution"] for t in out["top"]) + out["other_features"]["contribution"]
    assert total + out["bias"] == pytest.approx(out["reward"], abs=1e-9)
    assert {int(k) for k in out["contributions"]} == set(expected.contributions)


def test_score_table(ckpt, capsys):
    assert (
        main(["score", "--model", str(ckpt), "--prompt", "hi", "--response", "hello", "--top", "2"])
        == 0
    )
    text = capsys.readouterr().out
    assert text.startswith("reward ") and "others" in text and "bias" in text


def test_score_missing_model_is_clear(tmp_path, capsys):
    rc = main(["score", "--model", str(tmp_path / "nope"), "--prompt", "a", "--response", "b"])
    assert rc == 2
    assert "no SARM checkpoint" in capsys.readouterr().err


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "score" in capsys.readouterr().out
