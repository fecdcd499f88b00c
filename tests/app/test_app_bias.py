"""The Bias audit page (AppTest on the tiny store) against the report it shows."""

from __future__ import annotations

import json

import numpy as np
import pytest
from app_env import app_groups
from test_app_pages import env, frame_with, go, metric, start, store_path  # noqa: F401

from app import state
from app.app_pages import bias
from sarm import load_sarm
from workflows.bias_audit import audit_report, propose, run_audit, shipped_latents


@pytest.fixture(scope="module")
def audit(env, tmp_path_factory):  # noqa: F811
    model = load_sarm(env.model_dir)
    inputs = run_audit(
        model,
        app_groups(),
        None,
        shipped_latents(model, str(env.model_dir), False),
        pairs_per_operator=6,
        progress=False,
    )
    report = audit_report(inputs)
    path = tmp_path_factory.mktemp("bias") / "bias_audit.json"
    path.write_text(json.dumps(report))
    return report, path, inputs


@pytest.fixture
def with_report(audit, store_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv(bias.REPORT_ENV, str(audit[1]))
    return audit


def test_page_shows_one_row_per_property_with_the_reports_numbers(with_report):
    report, _, _ = with_report
    at = start("bias")
    assert [t.value for t in at.title] == ["Bias audit"] and not at.error
    table = frame_with(at, "reward_corr").set_index("property")
    assert list(table.index) == list(report["properties"])
    for name, row in report["properties"].items():
        shown = table.loc[name]
        corr = row["reward_corr"]["corr"]
        assert (
            np.isnan(shown["reward_corr"])
            if corr is None
            else shown["reward_corr"] == pytest.approx(corr)
        )
        median = row["counterfactual_delta_median"]
        if median is not None:
            assert shown["delta_r_median"] == pytest.approx(median)
            assert shown["operator"] == row["operator"]


def test_propose_fix_then_send_to_the_editor(with_report):
    report, _, inputs = with_report
    assert report["fixes"], "the tiny head pays for at least one rewrite"
    op = next(iter(report["fixes"]))
    fix = report["fixes"][op]
    at = start("bias")
    at.selectbox(key="bias_operator").set_value(op).run()
    at.button(key="bias_propose").click().run()
    assert at.subheader[0].value == f"Fix for the {op} bias"
    assert metric(at, "delta-r median before") == f"{fix['before']['bias']['median']:+.4f}"
    assert metric(at, "delta-r median after") == f"{fix['after']['bias']['median']:+.4f}"
    table = frame_with(at, "before_ci95")
    acc = table[(table["figure"] == "pairwise accuracy") & (table["on"] == "all")].iloc[0]
    assert acc["before"] == pytest.approx(fix["before"]["pairwise_accuracy"]["accuracy"])
    fixed, _ = propose(inputs, op)
    assert acc["after"] == pytest.approx(
        (
            fixed.rewards(inputs.audit.latents)[inputs.audit.index.chosen_row]
            > fixed.rewards(inputs.audit.latents)[inputs.audit.index.rejected_row]
        ).mean()
    )
    at.button(key="bias_send").click().run()
    assert not at.exception
    overrides = at.session_state[state.OVERRIDES]
    assert overrides == {
        int(f): pytest.approx(new) for f, (_, new) in fix["changed_weights"].items()
    }
    assert all(v == 0.0 for v in overrides.values())


def test_page_without_a_report_says_how_to_make_one(store_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv(bias.REPORT_ENV, raising=False)
    at = start("bias")
    assert not at.error and "sarm audit-bias" in at.info[0].value


def test_unreadable_report_is_an_error_naming_the_file(store_path, tmp_path, monkeypatch):  # noqa: F811
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"properties": {}}))
    monkeypatch.setenv(bias.REPORT_ENV, str(bad))
    at = start("bias")
    assert "bad.json" in at.error[0].value
