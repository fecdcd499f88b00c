"""What the pages' widgets offer and pre-select (app.choices), on small real inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import charts, choices, core
from feature_store.queries import FEATURE_ORDERS
from sarm.evaluate import NO_SUBSET
from sarm.head import Head
from sarm.interventions import ACTIONS, Intervention


def test_feature_options_label_the_top_features():
    weights = np.array([0.5, -2.0, 1.0, 3.0])
    expl = core.explain({0: 2.0, 1: 0.25, 3: -1.0}, Head(weights, 0.0), {3: "three"})
    options = choices.feature_options(expl.table)
    assert list(options) == [3, 0, 1]  # by |w z|: 3, 1, 0.5
    assert options[3] == f"{charts.feature_name(3, {3: 'three'}, 40)}  (-3.0000)"
    assert options[1] == "f1  (-0.5000)"
    other = core.explain({2: 1.0}, Head(weights, 0.0))
    deltas = core.pair_deltas(expl, other)
    by_delta = choices.feature_options(deltas, n=2)
    assert list(by_delta) == [3, 0]
    assert by_delta[0] == "f0  (+1.0000)"  # the margin delta, not a contribution
    assert choices.top_features(expl.table, 2) == [3, 0]
    assert all(isinstance(f, int) for f in choices.top_features(expl.table))


def test_feature_table_filters():
    orders = choices.feature_orders()
    assert orders[0] == "abs_contribution" and sorted(orders) == sorted(FEATURE_ORDERS)
    assert choices.feature_filters("  ", 0.0, "all") == {
        "search": None,
        "min_frequency": None,
        "labelled": None,
    }
    assert choices.feature_filters(" polite ", 0.05, "unlabelled") == {
        "search": "polite",
        "min_frequency": 0.05,
        "labelled": False,
    }
    assert choices.feature_filters("", 0.0, "labelled")["labelled"] is True
    assert [choices.page_count(n, 50) for n in (0, 1, 50, 51, 100, 101)] == [1, 1, 1, 2, 2, 3]
    assert choices.highlight_scale([-3.0, 2.0]) == 3.0
    assert choices.highlight_scale(pd.Series([0.0])) == 1e-9


def test_reward_bounds_are_whole_hundredths():
    lo, hi = choices.reward_bounds(np.array([-0.1234, 0.4561, 0.2]))
    assert (lo, hi) == (-0.13, 0.46)
    assert choices.reward_bounds(np.array([0.5, 0.5])) == (0.5, 0.51)
    lo, hi = choices.reward_bounds(np.array([2.0, 3.0]))
    assert (lo, hi) == (2.0, 3.0)


def test_pair_options_bring_a_wanted_pair_into_view():
    table = pd.DataFrame(
        {
            "pair": np.arange(6),
            "chosen_id": [10, 12, 14, 16, 18, 20],
            "rejected_id": [11, 13, 15, 17, 19, 21],
            "subset": ["a", "b", "a", "b", "a", "b"],
        }
    )
    shown = table[table["subset"] == "a"]
    assert choices.pair_options(table, shown, None) == ([0, 2, 4], None)
    assert choices.pair_options(table, shown, (14, 15)) == ([0, 2, 4], 2)
    assert choices.pair_options(table, shown, (16, 17)) == ([3, 0, 2, 4], 3)
    assert choices.pair_options(table, shown, (16, 99)) == ([0, 2, 4], None)
    assert choices.pair_options(table, shown, (20, 21), limit=1) == ([5, 0], 5)
    assert choices.find_pair(table, (18, 19)) == 4 and choices.find_pair(table, None) is None


def test_editor_choices():
    assert choices.base_versions(["ingest", "v2"], "v2") == ["ingest", "v2"]
    assert choices.base_versions([], "ingest") == ["ingest"]
    assert choices.base_versions(["v2"], "ingest") == ["ingest", "v2"]
    assert choices.editor_features([5, 2], {2: 0.1, 9: 0.0, 5: 1.0}) == [5, 2, 9]
    assert choices.editor_features([], {}) == []
    assert choices.weight_scale(np.array([0.5, -2.5, 1.0])) == 2.5
    assert choices.weight_scale(np.zeros(3)) == 1.0


def test_shift_defaults():
    assert choices.default_target(("chat", "code")) == ["chat"]
    assert choices.default_target((NO_SUBSET, "safety")) == ["safety"]
    assert choices.default_target(("chat",)) == []
    assert choices.default_target((NO_SUBSET,)) == []
    key = choices.shift_key("subset:chat", "rest", "ingest", {3: 0.5, 1: -1.0}, 7)
    assert key == ("subset:chat", "rest", "ingest", ((3, 0.5), (1, -1.0)), 0)
    assert choices.shift_key("label:polite", "rest", "v", {}, 7)[-1] == 7
    assert choices.shift_key("all", "label:x", "v", {}, 7)[-1] == 7
    options = [9, 4, 7, 1, 3, 8]
    assert choices.selected_features(options, None, True) == [9, 4, 7, 1, 3]
    assert choices.selected_features(options, [7, 2, 8], False) == [9, 4, 7, 1, 3]
    assert choices.selected_features(options, [7, 2, 8], True) == [7, 8]
    assert choices.selected_features(options[:2], [], True) == []


@pytest.mark.parametrize("action", choices.ACTION_CHOICES)
def test_every_action_choice_is_an_intervention(action):
    assert action in ACTIONS and action in choices.ACTION_NAMES
    (made,) = core.shift_actions([(action, 0.5)], [1, 4])  # as the page makes it
    assert made == Intervention(action, (1, 4), 0.0 if action == "zero" else 0.5)
    assert choices.ACTION_CHOICES[0] == "scale"
    assert set(choices.DIRECTION_NAMES) == {"target", "complement", "both"}
