"""Preference shift: discovery on planted features, shift reports against dense numpy,
set specs over a real tiny store, and ``sarm shift`` end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from helpers import make_released_checkpoint

from feature_store import FeatureStore, ingest
from sarm import load_sarm
from sarm.data import save_jsonl
from sarm.evaluate import PairIndex
from sarm.interventions import Intervention, parse_actions, preview_score
from sarm.latents import SparseLatents
from sarm.scoring import response_rows
from sarm.shift import (
    ORDERS,
    discover_features,
    evaluate_shift,
    feature_contrast,
    select_rows,
)
from sarm.types import PreferenceGroup
from workflows.cli import main
from workflows.shift import prepare_shift, store_shift_data

PLANTED = (5, 17, 42)
D = 64


# ------------------------------------------------------------ synthetic data


def planted_latents(n: int = 100, n_target: int = 31, seed: int = 0) -> SparseLatents:
    """Target rows (the first ``n_target``) fire PLANTED strongly; every row fires noise."""
    rng = np.random.default_rng(seed)
    noise_pool = np.setdiff1d(np.arange(D), PLANTED)
    idx, vals = [], []
    for row in range(n):
        feats = list(rng.choice(noise_pool, size=5, replace=False))
        values = list(rng.uniform(0.2, 1.5, size=5))
        for f in PLANTED:
            if row < n_target and rng.random() < 0.9:
                feats.append(f)
                values.append(rng.uniform(1.0, 2.0))
            elif row >= n_target and rng.random() < 0.05:
                feats.append(f)
                values.append(rng.uniform(0.1, 0.3))
        idx.append(np.array(feats))
        vals.append(np.array(values))
    return SparseLatents.from_rows(idx, vals, D)


def reference_contrast(z, target, complement, roles, w) -> pd.DataFrame:
    """The discovery statistics straight from a dense matrix."""
    zt, zc = z[target], z[complement]
    mt, mc = zt.mean(0), zc.mean(0)
    diff = mt - mc
    side = np.sign(diff)
    consistency = ((np.sign(zt - mc) == side) & (side != 0)).mean(0)
    nt, nc = (zt != 0).sum(0), (zc != 0).sum(0)
    a_c = z[target][roles[target] == "chosen"].mean(0)
    a_r = z[target][roles[target] == "rejected"].mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        salience = (a_c - a_r) / (a_c + a_r + 2 * mt)
        selectivity = np.abs(zt).mean(0) / np.abs(zc).mean(0)
    frame = pd.DataFrame(
        {
            "feature_id": np.arange(z.shape[1]),
            "score": np.abs(diff) * consistency,
            "mean_target": mt,
            "mean_complement": mc,
            "mean_diff": diff,
            "consistency": consistency,
            "freq_target": nt / len(target),
            "freq_complement": nc / len(complement),
            "freq_ratio": ((nt + 1) / (len(target) + 2)) / ((nc + 1) / (len(complement) + 2)),
            "mean_abs_target": np.abs(zt).mean(0),
            "mean_abs_complement": np.abs(zc).mean(0),
            "selectivity": selectivity,
            "salience": salience,
            "weight": w,
            "contribution_target": w * mt,
            "contribution_complement": w * mc,
        }
    )
    return frame[(nt + nc) > 0].reset_index(drop=True)


@pytest.fixture()
def planted():
    latents = planted_latents()
    roles = np.array(["chosen", "rejected"] * 50)
    weight = np.random.default_rng(3).normal(size=D)
    return latents, np.arange(31), np.arange(31, 100), roles, weight


def test_planted_features_rank_first(planted):
    latents, target, complement, roles, weight = planted
    table = discover_features(latents, target, complement, weight=weight, roles=roles, limit=5)
    assert set(table["feature_id"][:3]) == set(PLANTED)
    assert (table["score"].diff().dropna() <= 0).all()
    for order_by in ("mean_diff", "freq_ratio", "selectivity", "contribution"):
        ranked = discover_features(latents, target, complement, weight=weight, order_by=order_by)
        assert ranked["feature_id"].iloc[0] in PLANTED or order_by == "contribution"


def test_contrast_matches_dense_reference(planted):
    latents, target, complement, roles, weight = planted
    got = feature_contrast(latents, target, complement, weight=weight, roles=roles)
    ref = reference_contrast(latents.dense().astype(np.float64), target, complement, roles, weight)
    pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-6, atol=1e-9)


def test_directions_labels_and_limits(planted):
    latents, target, complement, *_ = planted
    labels = {5: "refuses", 17: "apology"}
    table = discover_features(latents, target, complement, labels=labels, limit=None)
    assert (table["mean_abs_target"] > table["mean_abs_complement"]).all()
    assert table.set_index("feature_id").loc[5, "label"] == "refuses"
    via_callable = discover_features(latents, target, complement, labels=lambda ids: labels)
    assert via_callable["label"].tolist()[:20] == table["label"].tolist()[:20]
    other = discover_features(latents, target, complement, direction="complement", limit=None)
    assert not set(other["feature_id"]) & set(PLANTED)
    both = discover_features(latents, target, complement, direction="both", limit=None)
    assert len(both) == len(table) + len(other) + int(
        (both["mean_abs_target"] == both["mean_abs_complement"]).sum()
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"direction": "up"}, "direction must be one of"),
        ({"order_by": "magic"}, "order_by must be one of"),
        ({"limit": 0}, "limit must be a positive integer"),
    ],
)
def test_discovery_argument_errors(planted, kwargs, message):
    latents, target, complement, *_ = planted
    with pytest.raises(ValueError, match=message):
        discover_features(latents, target, complement, **kwargs)


def test_row_errors(planted):
    latents, target, *_ = planted
    with pytest.raises(ValueError, match="share 1 examples"):
        feature_contrast(latents, target, [30, 31])
    with pytest.raises(ValueError, match="complement is empty"):
        feature_contrast(latents, target, [])
    with pytest.raises(ValueError, match=r"outside 0\.\.99"):
        feature_contrast(latents, target, [100])
    with pytest.raises(ValueError, match="more than once"):
        feature_contrast(latents, [0, 0], [1])
    mask = np.zeros(100, dtype=bool)
    mask[31:] = True
    got = feature_contrast(latents, target, mask)
    assert got.equals(feature_contrast(latents, target, np.arange(31, 100)))


# -------------------------------------------------------------- evaluation


def direct_report(latents, weight, bias, w_after, target, complement, chosen, rejected):
    """Means, selectivity and in-set accuracy computed from dense rewards."""
    z = latents.dense().astype(np.float64)
    before, after = z @ weight + bias, z @ w_after + bias
    out = {}
    for name, rows in (("target", target), ("complement", complement)):
        inside = np.isin(chosen, rows) & np.isin(rejected, rows)
        out[name] = {
            "mean_abs_delta": np.abs(after[rows] - before[rows]).mean(),
            "accuracy_before": (before[chosen] > before[rejected])[inside].mean(),
            "accuracy_after": (after[chosen] > after[rejected])[inside].mean(),
            "n_pairs": int(inside.sum()),
        }
    out["selectivity"] = out["target"]["mean_abs_delta"] / out["complement"]["mean_abs_delta"]
    return out, before, after


def test_shift_report_matches_direct_computation(planted):
    latents, target, complement, _, weight = planted
    chosen, rejected = np.arange(0, 100, 2), np.arange(1, 100, 2)
    index = PairIndex.from_arrays(chosen, rejected)
    items = parse_actions(["scale:0.0"], PLANTED)
    report = evaluate_shift(latents, weight, 0.5, items, target, complement, index)
    w_after = weight.copy()
    w_after[list(PLANTED)] = 0.0
    ref, before, after = direct_report(
        latents, weight, 0.5, w_after, target, complement, chosen, rejected
    )
    assert report.selectivity == pytest.approx(ref["selectivity"], rel=1e-9)
    assert report.selectivity > 5
    for name in ("target", "complement"):
        part = getattr(report, name)
        assert part.mean_abs_delta == pytest.approx(ref[name]["mean_abs_delta"], rel=1e-9)
        assert part.accuracy_before == pytest.approx(ref[name]["accuracy_before"])
        assert part.accuracy_after == pytest.approx(ref[name]["accuracy_after"])
        assert part.n_pairs == ref[name]["n_pairs"]
    assert report.target.n_pairs == 15 and report.complement.n_pairs == 34  # pair (30, 31) crosses
    np.testing.assert_allclose(report.overall.rewards_after, after, atol=1e-9)
    np.testing.assert_allclose(report.target.rewards_before, before[target], atol=1e-9)
    assert report.overall.n_pairs == 50
    text = json.dumps(report.to_dict(rewards=True), allow_nan=False)
    assert json.loads(text)["target"]["n_examples"] == 31
    metrics = report.to_metrics()
    assert metrics["selectivity"] == report.selectivity and all(
        map(math.isfinite, metrics.values())
    )
    frame = report.distribution_frame()
    assert frame.groupby(["set", "stage"]).size().to_dict() == {
        ("complement", "after"): 69,
        ("complement", "before"): 69,
        ("target", "after"): 31,
        ("target", "before"): 31,
    }


def test_selectivity_guards():
    latents = SparseLatents.from_rows(
        [np.array([0]), np.array([1]), np.array([1])], [np.array([1.0])] * 3, 2
    )
    index = PairIndex.from_arrays([0], [1])
    w = np.array([1.0, 1.0])
    only_target = evaluate_shift(latents, w, 0.0, parse_actions(["zero@0"]), [0], [1, 2], index)
    assert only_target.selectivity == math.inf
    assert only_target.to_dict()["selectivity"] is None
    assert only_target.selectivity_status == "complement_unchanged"
    assert "selectivity" not in only_target.to_metrics()
    assert only_target.target.n_pairs == 0 and only_target.target.accuracy_before is None
    nothing = evaluate_shift(latents, w, 0.0, parse_actions(["scale:1@0"]), [0], [1, 2], index)
    assert nothing.selectivity is None and nothing.selectivity_status == "unchanged"
    with pytest.raises(ValueError, match="base_rewards must have shape"):
        evaluate_shift(latents, w, 0.0, [], [0], [1], index, base_rewards=np.zeros(2))


# --------------------------------------------------------- store and specs

TOPICS = ["the weather", "a recipe", "chess", "tax rules"]


def make_groups() -> list[PreferenceGroup]:
    groups = []
    for i in range(8):
        prompt = ({"role": "user", "content": f"Question {i} about {TOPICS[i % 4]}?"},)
        if i < 3:
            groups.append(
                PreferenceGroup(
                    f"r{i}", prompt, ("I can't help with that.",), (f"Sure: {i}",), subset="refusal"
                )
            )
        elif i < 6:
            good, bad = f"A careful answer about {TOPICS[i % 4]}.", "No idea."
            groups.append(PreferenceGroup(f"c{i}", prompt, (good,), (bad,), subset="chat"))
        elif i == 6:
            groups.append(
                PreferenceGroup(
                    "b6", prompt, ("Best.",), ("Worse.", "Worst."), subset="chat", kind="best_of_n"
                )
            )
        else:
            groups.append(PreferenceGroup("s7", prompt, ("Alone.",), kind="single", label=1.0))
    return groups


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_released_checkpoint(tmp_path_factory.mktemp("shift") / "tiny", seed=2, d_sae=64)


@pytest.fixture(scope="module")
def sarm(ckpt):
    return load_sarm(ckpt)


@pytest.fixture(scope="module")
def store_path(sarm, tmp_path_factory):
    path = tmp_path_factory.mktemp("shift-store") / "store.duckdb"
    with FeatureStore.open(path) as store:
        ingest(store, sarm, make_groups(), batch_size=4, chunk_size=5, progress=False)
        store.set_label(int(active_feature(store)), "polite refusal")
    return path


def active_feature(store) -> int:
    """The most frequent feature (so a label search selects some examples)."""
    return int(np.bincount(store.latent_matrix().indices).argmax())


@pytest.fixture()
def store(store_path):
    with FeatureStore.open(store_path, read_only=True) as s:
        yield s


def test_store_data_matches_groups(store):
    data = store_shift_data(store)
    groups = make_groups()
    keys, _ = response_rows(groups)
    expected = PairIndex.from_groups(groups, {k: i for i, k in enumerate(keys)})
    got = data.pair_index
    pairs = lambda ix: sorted(zip(ix.chosen_row.tolist(), ix.rejected_row.tolist(), strict=True))  # noqa: E731
    assert pairs(got) == pairs(expected) and got.n_pairs == 3 + 3 + 2
    assert got.subset_names == expected.subset_names
    np.testing.assert_allclose(data.rewards(), store.examples_frame()["reward"], atol=1e-5)


def test_set_specs_over_store(store):
    data = store_shift_data(store)
    frame = store.examples_frame()
    sel = lambda spec, **kw: select_rows(data, spec, base="store", **kw).tolist()  # noqa: E731
    assert sel("subset:refusal") == frame.index[frame.subset == "refusal"].tolist()
    not_refusal = frame.index[frame.subset.fillna("(none)") != "refusal"].tolist()
    assert sel("subset:!refusal") == not_refusal
    assert (
        sel("subset:chat&role:chosen")
        == frame.index[(frame.subset == "chat") & (frame.role == "chosen")].tolist()
    )
    target = np.array(sel("subset:refusal"))
    assert sel("rest", target=target) == not_refusal
    f = active_feature(store)
    dense = data.latents.dense()
    assert sel(f"feature:{f}") == np.flatnonzero(dense[:, f] != 0).tolist()
    search = lambda text: store.search_labels(text)["feature_id"].tolist()  # noqa: E731
    assert sel("label:REFUSAL", search_labels=search) == sel(f"feature:{f}")
    assert sel("all") == list(range(data.n))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("subset:refusl", r"unknown subset \['refusl'\]; the data has"),
        ("role:winner", "unknown role"),
        ("feature:999", "out of range"),
        ("label:nothing-like-this", "no feature's label"),
        ("colour:red", "unknown term 'colour'"),
        ("subset:", "is not one of"),
        ("rest", "only allowed in the complement"),
        ("subset:refusal&subset:chat", "selects no examples"),
    ],
)
def test_set_spec_errors(store, spec, message):
    data = store_shift_data(store)
    search = lambda text: store.search_labels(text)["feature_id"].tolist()  # noqa: E731
    with pytest.raises(ValueError, match=message):
        select_rows(data, spec, base="store", search_labels=search)


def test_prepare_shift_with_a_file_source(store, sarm, tmp_path):
    extra = [
        PreferenceGroup(
            "x1",
            ({"role": "user", "content": "Help me hack a bank."},),
            ("No, I won't.",),
            ("Step one: ...",),
            subset="harm",
        ),
    ]
    path = save_jsonl(extra, tmp_path / "extra.jsonl")
    shift = prepare_shift(f"file:{path}", "rest", store=store, model=sarm)
    n_store = len(store.examples_frame())
    assert shift.target.tolist() == [n_store, n_store + 1]
    assert shift.complement.tolist() == list(range(n_store))
    expected = [
        sarm.score("Help me hack a bank.", r).reward for r in ("No, I won't.", "Step one: ...")
    ]
    np.testing.assert_allclose(shift.base_rewards[shift.target], expected, atol=1e-4)
    report = shift.evaluate(parse_actions(["zero"], shift.discover(limit=2)["feature_id"]))
    assert report.target.n_pairs == 1 and report.complement.n_pairs == 8
    with pytest.raises(ValueError, match="needs a model"):
        prepare_shift(f"file:{path}", "rest", store=store)
    with pytest.raises(ValueError, match="give a feature store or data"):
        prepare_shift("subset:refusal", "rest", model=sarm)


def test_preview_of_a_real_score_matches_the_shift(store, sarm):

    shift = prepare_shift("subset:refusal", "rest", store=store, model=sarm)
    items = [Intervention("scale", (active_feature(store),), -2.0)]
    after = shift.evaluate(items).overall.rewards_after
    score = sarm.score("Question 0 about the weather?", "I can't help with that.")
    preview = preview_score(score, sarm.head.weight, items)
    assert preview.reward == pytest.approx(after[0], abs=1e-4)  # example 0 is that response
    assert abs(preview.reward - score.reward) > 1e-3


# ------------------------------------------------------------------- CLI


def reference_top(store_path, k: int) -> list[int]:
    """Top-k target features for subset:refusal vs rest, ranked from dense numbers."""
    with FeatureStore.open(store_path, read_only=True) as store:
        data = store_shift_data(store)
        frame = store.examples_frame()
    target = np.flatnonzero(frame.subset == "refusal")
    complement = np.flatnonzero(frame.subset != "refusal")
    ref = reference_contrast(
        data.latents.dense().astype(np.float64),
        target,
        complement,
        frame.role.to_numpy(),
        data.weight,
    )
    ref = ref[ref.mean_abs_target > ref.mean_abs_complement]
    ref = ref.assign(neg=-ref.score).sort_values(["neg", "feature_id"])
    return ref["feature_id"].head(k).tolist()


def test_cli_json_saves_a_head_version(ckpt, store_path, capsys):
    argv = [
        "shift",
        "--model",
        str(ckpt),
        "--store",
        str(store_path),
        "--target",
        "subset:refusal",
        "--top",
        "3",
        "--json",
        "--name",
        "no-refusal",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    top = reference_top(store_path, 3)
    assert [f["feature_id"] for f in out["features"]] == top
    assert out["report"]["interventions"] == [{"action": "scale", "value": 0.0, "features": top}]
    assert out["head_version"]["name"] == "no-refusal"
    with FeatureStore.open(store_path, read_only=True) as store:
        saved = store.load_head("no-refusal")
        w, b = store.head_weights()
        frame = store.examples_frame()
        z = store_shift_data(store).latents.dense().astype(np.float64)
    expected = w.copy()
    expected[top] = 0.0
    assert np.array_equal(saved.weights, expected) and saved.bias == b
    assert saved.parent == "ingest"
    target = (frame.subset == "refusal").to_numpy()
    delta = np.abs(z @ expected.astype(np.float64) - z @ w.astype(np.float64))
    report = out["report"]
    assert report["target"]["mean_abs_delta"] == pytest.approx(delta[target].mean(), rel=1e-6)
    assert report["complement"]["mean_abs_delta"] == pytest.approx(delta[~target].mean(), rel=1e-6)
    if report["selectivity"] is not None:
        assert saved.metrics["selectivity"] == pytest.approx(report["selectivity"])
    assert saved.metrics["target_mean_abs_delta"] == pytest.approx(
        report["target"]["mean_abs_delta"]
    )
    again = [
        "shift",
        "--model",
        str(ckpt),
        "--store",
        str(store_path),
        "--target",
        "subset:refusal",
        "--from-head",
        "no-refusal",
        "--features",
        str(top[0]),
        "--action",
        "add:1.5",
        "--name",
        "second",
        "--json",
    ]
    assert main(again) == 0
    capsys.readouterr()
    with FeatureStore.open(store_path, read_only=True) as store:
        second = store.load_head("second")
    expected[top[0]] += 1.5
    assert second.parent == "no-refusal" and np.array_equal(second.weights, expected)


def test_cli_text_preview_with_steering(ckpt, store_path, capsys):
    argv = [
        "shift",
        "--model",
        str(ckpt),
        "--store",
        str(store_path),
        "--target",
        "subset:refusal",
        "--complement",
        "subset:chat",
        "--top",
        "2",
        "--action",
        "act_add:-1.0",
        "--action",
        "scale:2",
        "--no-save",
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "top features:" in text and "selectivity" in text
    assert "act_add:-1.0@" in text and "no head version saved" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--action", "act_add:1"], "act_add cannot be saved"),
        (["--action", "boost:1"], "unknown action"),
        (["--top", "0"], "--top must be at least 1"),
        (["--name", "!bad"], "is not valid"),
        (["--no-save", "--store", ""], "needs a feature store"),
        (["--store", "/nonexistent/x.duckdb"], "does not exist"),
    ],
)
def test_cli_errors(ckpt, store_path, capsys, extra, message):
    argv = ["shift", "--model", str(ckpt), "--store", str(store_path), "--target", "subset:refusal"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err


def test_cli_order_choices_match_the_library():
    from typing import get_args

    from sarm.configs import OrderBy

    assert get_args(OrderBy) == ORDERS


def test_cli_scores_data_without_a_store(ckpt, sarm, tmp_path, capsys):
    groups = make_groups()
    refusal = [
        sarm.score(messages=g.conversation(r)) for g in groups[:3] for r in (*g.chosen, *g.rejected)
    ]
    counts = np.bincount([f for s in refusal for f in s.activations], minlength=64)
    feats = [int(f) for f in np.argsort(-counts, kind="stable")[:2]]
    expected = np.mean([0.5 * sum(s.activations.get(f, 0.0) for f in feats) for s in refusal])
    assert expected != 0
    path = save_jsonl(groups, tmp_path / "data.jsonl")
    argv = [
        "shift",
        "--model",
        str(ckpt),
        "--data",
        str(path),
        "--target",
        "subset:refusal",
        "--features",
        ",".join(map(str, feats)),
        "--action",
        "add:0.5",
        "--no-save",
        "--json",
    ]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["store"] is None and out["head_version"] is None
    report = out["report"]
    assert report["interventions"] == [{"action": "add", "value": 0.5, "features": feats}]
    assert report["target"]["n_examples"] == 6 and report["overall"]["n_examples"] == 16
    assert report["target"]["mean_delta"] == pytest.approx(expected, abs=1e-5)
