"""What the pages write (app.text): every string built from real numbers, checked by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import tables, text
from feature_store.queries import StoredExample
from sarm.interventions import parse_actions
from sarm.shift.report import SetShift


def test_numbers():
    assert text.fmt(None) == "n/a" and text.fmt(float("nan"), ".2%") == "n/a"
    assert text.fmt(0.123456) == "0.1235" and text.fmt(0.98765, ".2%") == "98.77%"
    assert text.fmt(-0.5, "+.4f") == "-0.5000"
    assert text.points(None) is None
    assert text.points(0.0125) == "+1.25 pts" and text.points(-0.5) == "-50.00 pts"
    assert text.points(0.0) == "+0.00 pts"
    assert text.frequency(0.5) == "50.0%" and text.frequency(0.01) == "1.0%"
    assert text.frequency(0.00123) == "1.23e-03" and text.frequency(0.0) == "0.00e+00"


def test_edit_caption_counts_the_changed_weights():
    assert text.edit_caption("ingest", 0) == ""
    assert text.edit_caption("v2", 1) == (
        "Under the edited head: v2 with 1 changed weight (see Head editor)."
    )
    assert "with 3 changed weights (see" in text.edit_caption("v2", 3)


def test_rmbench_caption():
    scores = {"easy": 0.75, "normal": 0.5, "hard": 1 / 3}
    assert text.rmbench_caption(scores) == "RM-Bench: easy 75.0%, normal 50.0%, hard 33.3%"


def stored(**changes) -> StoredExample:
    fields = dict(
        example_id=7,
        group_id="g3",
        group_index=3,
        role="rejected",
        response_index=1,
        kind="pair",
        subset="code",
        target=None,
        prompt="P",
        response="R",
        prompt_messages=[{"role": "user", "content": "P"}],
        reward=0.25,
        n_tokens=42,
        truncated=False,
        features=pd.DataFrame(),
    )
    return StoredExample(**{**fields, **changes})


def test_example_caption_and_option():
    assert text.example_caption(stored()) == (
        "group `g3` \u00b7 rejected #1 \u00b7 subset code \u00b7 42 tokens"
    )
    caption = text.example_caption(stored(subset=None, truncated=True))
    assert caption.endswith("subset (none) \u00b7 42 tokens (truncated)")
    long = "word " * 40
    option = text.example_option(12, "chosen", "chat", -0.12345, long)
    assert option.startswith("#12 \u00b7 chosen \u00b7 chat \u00b7 r=-0.123 \u00b7 word word")
    shown = option.split(" \u00b7 ")[-1]
    assert len(shown) == 70 and shown.endswith("\u2026") and "  " not in shown
    assert text.match_count(3, 500) == "3 match"
    assert text.match_count(1234, 500) == "1,234 match; the first 500 are listed"


def test_pair_labels():
    row = pd.Series(
        {
            "group_id": "g1",
            "subset": "chat",
            "chosen_id": 4,
            "rejected_id": 9,
            "margin": -0.0123456,
            "correct": False,
            "change": "broken",
        }
    )
    assert text.pair_option(row) == (
        "g1 \u00b7 chat \u00b7 #4 vs #9 \u00b7 margin -0.0123  (misranked)"
    )
    assert text.pair_option({**row, "margin": 0.5, "correct": True}).endswith("margin +0.5000")
    assert text.misranked_pair(row) == "g1 \u00b7 chat: #4 vs #9, margin -0.0123"
    assert text.flipped_pair(row) == "g1: #4 vs #9 (broken)"
    assert text.margin_badge(0.01).startswith(":green[:material/arrow_upward: ranked right")
    for wrong in (0.0, -2.0):  # a tie counts as wrong: red and down, never an up arrow
        badge = text.margin_badge(wrong)
        assert badge.startswith(":red[:material/arrow_downward: misranked")
        assert "upward" not in badge


def test_track_caption_gives_the_pooled_value_and_the_peak():
    track = np.array([0.1, -0.7, 0.25])
    assert text.track_caption("Chosen", track) == (
        "**Chosen** \u00b7 pooled z = 0.2500 \u00b7 peak |z| = 0.7000"
    )


def test_feature_texts():
    assert text.feature_header(12, "") == "Feature 12"
    assert text.feature_header(12, "Polite") == "Feature 12: Polite"
    row = {
        "example_id": 5,
        "role": "chosen",
        "subset": None,
        "activation": 1.5,
        "contribution": -0.25,
    }
    assert text.top_example(row) == (
        "**#5** \u00b7 chosen \u00b7 (none) \u00b7 z = 1.5000 \u00b7 contribution -0.2500"
    )
    assert text.editor_feature("f3 \u00b7 x", 0.5, 0.0) == (
        "**f3 \u00b7 x**  \nbase +0.5000 \u00b7 z here 0.0000"
    )
    caption = text.error_margin_caption(1234, -5.5)
    assert caption.startswith("Summed over the 1,234 misranked pairs (total margin -5.5000)")


def test_shift_texts():
    rows = np.arange(3)
    target = SetShift("target", rows, np.zeros(3), np.ones(3), 1, 1.0, 0.0, 1)
    complement = SetShift(
        "complement", np.arange(1234), np.zeros(1234), np.zeros(1234), 0, None, None, 0
    )
    caption = text.shift_sets_caption(
        {"target": target, "complement": complement}, ("subset:chat", "rest"), 1.26
    )
    assert caption == (
        "**target** `subset:chat`: 3 responses, 1 pairs \u00b7 "
        "**complement** `rest`: 1,234 responses, 0 pairs \u00b7 recomputed in 1.3 ms"
    )
    actions = parse_actions(["scale:0.5", "add:-0.1@3"], [1, 2])
    note = text.shift_note("subset:chat", "rest", actions)
    assert note == (
        "preference shift: target subset:chat, complement rest; scale:0.5@1,2; add:-0.1@3"
    )
    many = parse_actions(["zero"], list(range(1000)))
    long = text.shift_note("all", "rest", many)
    assert len(long) == text.MAX_NOTE and long.endswith("\u2026")
    assert text.steering_warning(["act_add:1.0@3"]).startswith(
        "act_add:1.0@3 adds to a feature's activation"
    )


def test_verify_verdict():
    ids, got = np.array([1, 5, 9]), np.array([0.5, -1.25, 2.0])
    assert text.verify_verdict(pd.DataFrame({"checkpoint_reward": got})) is None
    close = tables.verify_table(ids, got, got + np.array([1e-6, -3e-5, 0.0]))
    kind, message = text.verify_verdict(close)
    assert kind == "success" and message.endswith("(max |diff| 3.00e-05).")
    far = tables.verify_table(ids, got, got + np.array([0.0, 2e-4, 0.0]))
    assert text.verify_verdict(far)[0] == "warning"
    assert text.verify_verdict(pd.DataFrame({"abs_diff": [np.nan]}))[0] == "warning"
    assert text.verify_verdict(pd.DataFrame({"abs_diff": [1e-4]}))[0] == "warning"


@pytest.mark.parametrize("value", [0.0, 1e-4 - 1e-12])
def test_verify_tolerance_is_strict(value):
    assert text.verify_verdict(pd.DataFrame({"abs_diff": [value]}))[0] == "success"
