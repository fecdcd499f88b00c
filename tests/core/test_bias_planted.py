"""The planted-bias test on the real default SARM (slow: loads the embedded backbone).

On the shipped audit (its rewrites were scored by real forward passes and ship
in ``bias_samples.npz``), find the feature whose activation the markdown
operator raises most, plant a large positive weight on it in the real trained
head, and check that the audit ranks it first for markdown, that the fix
proposed from the dev rewrites zeroes it, and that the fix removes the planted
delta-r while the other figures stay within the original head's intervals.
"""

from __future__ import annotations

import numpy as np
import pytest

from sarm import cachedir
from sarm.bias.counterfactual import load_samples
from sarm.data import resolve_data
from sarm.evaluate import head_summary
from workflows.bias_audit import (
    AuditInputs,
    audit_report,
    pairs_of,
    propose,
    score_set,
    shipped_latents,
)
from workflows.default_sarm.data import splits_dir

pytestmark = pytest.mark.slow

PLANTED_DELTA = 2.0  # the planted feature's extra mean delta-r on a markdown rewrite


@pytest.fixture(scope="module")
def audit_parts():
    from sarm.checkpoints import load_sarm

    root = cachedir.shipped_default_dir()
    splits, meta = load_samples(root / "bias_samples.npz")
    model = load_sarm("default")
    data = resolve_data(str(splits_dir() / "test.jsonl.gz"), skip_malformed=True)
    dev = resolve_data(str(splits_dir() / "dev.jsonl.gz"), skip_malformed=True)
    audit = score_set("test", model, data.groups, shipped_latents(model, "default", False))
    assert audit.index.n_pairs == meta["n_pairs"]

    def inputs(head):
        return AuditInputs(
            head,
            audit,
            splits["audit"],
            pairs_of("dev", dev.groups),
            splits["dev"],
            ["markdown"],
            {},
        )

    return model, splits, inputs


def _markdown_feature(sample) -> int:
    """The feature whose activation the markdown rewrite raises most on average."""
    dz = sample.rewritten.dense().astype(np.float64) - sample.original.dense()
    up = (dz > 0).mean(axis=0)
    mean = np.where(up >= 0.5, dz.mean(axis=0), -np.inf)
    return int(np.argmax(mean))


def test_shipped_rewrites_are_the_models_own(audit_parts):
    model, splits, _ = audit_parts
    sample = splits["audit"]["markdown"]
    data = resolve_data(str(splits_dir() / "test.jsonl.gz"), skip_malformed=True)
    scored = pairs_of("test", data.groups)
    for j in range(3):  # a bounded number of real forward passes
        p = int(sample.pairs[j])
        group = scored.groups[int(scored.index.group[p])]
        score = model.score(messages=group.conversation(sample.texts[j]))
        assert score.reward == pytest.approx(
            model.head.rewards(sample.rewritten.take([j]))[0], abs=1e-3
        )


def test_planted_markdown_feature_is_found_and_fixed(audit_parts):
    model, splits, inputs = audit_parts
    head = model.head
    feature = _markdown_feature(splits["dev"]["markdown"])
    plant = PLANTED_DELTA / float(_activation_change(splits["dev"]["markdown"], feature).mean())
    planted = head.edit({feature: head.weight_of(feature) + plant})
    # the planted payment on the audit rewrites, computed from the activations alone
    payment = plant * float(_activation_change(splits["audit"]["markdown"], feature).mean())
    assert payment > 1.0

    clean = audit_report(inputs(head))
    report = audit_report(inputs(planted))
    md = report["operators"]["markdown"]["audit"]
    assert report["properties"]["markdown"]["counterfactual_top_features"][0]["id"] == feature
    assert md["top_features"][0]["id"] == feature
    clean_md = clean["operators"]["markdown"]["audit"]
    assert md["mean"] == pytest.approx(clean_md["mean"] + payment, rel=1e-6)

    fixed, fix = propose(inputs(planted), "markdown")
    assert fix["features"][0] == feature and fixed.weight_of(feature) == 0.0
    after = fix["after"]["bias"]
    # the planted payment is gone: the fixed head pays no more than the clean head did
    assert after["mean"] < fix["before"]["bias"]["mean"] - 0.9 * payment
    low, high = clean_md["median_ci95"]
    assert after["median"] <= high
    # every other rewrite's figure stays within the clean head's interval
    for op, fig in fix["after"]["other_biases"].items():
        low, high = clean["operators"][op]["audit"]["median_ci95"]
        assert low <= fig["median"] <= high, op
    # and so does pairwise accuracy, overall and per source
    audit = inputs(head).audit
    acc_clean = head_summary(head.rewards(audit.latents), audit.index, audit.groups)
    low, high = acc_clean["all"]["ci95"]
    assert low <= fix["after"]["pairwise_accuracy"]["accuracy"] <= high
    for source, fig in fix["after"]["per_source"].items():
        low, high = acc_clean["per_source"][source]["ci95"]
        assert low <= fig["accuracy"] <= high, source


def _activation_change(sample, feature: int) -> np.ndarray:
    return sample.rewritten.dense()[:, feature].astype(np.float64) - sample.original.dense()[
        :, feature
    ].astype(np.float64)
