"""The bias audit over a model and data files: observational, counterfactual, and a fix.

``run_audit`` scores every response of the audit data (the default SARM's
audit set comes from its shipped latents, no forward pass), measures the
properties (:mod:`sarm.bias.properties`), rewrites a seeded sample of pairs
per operator on the dev data and on the audit data and scores the rewrites
(real forward passes), proposes one fix per biased operator from the dev data
and judges it on the audit data. The result is one JSON-ready dict (the
schema is in docs/bias_audit.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sarm.bias.counterfactual import (
    RewriteSample,
    counterfactual_shares,
    delta_rewards,
    examples,
    load_samples,
    save_samples,
    summarize,
)
from sarm.bias.fix import accuracy_change, apply_fix, carriers
from sarm.bias.observational import property_audit
from sarm.bias.operators import EXAMPLE_TEXT, OPERATORS, operator_names, rewrite
from sarm.bias.properties import PROPERTIES, measure, property_names
from sarm.bias.stats import median_interval
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.scoring import response_rows
from sarm.types import PreferenceGroup

logger = logging.getLogger("sarm.bias")

SCHEMA_VERSION = 1


def harmless(group: PreferenceGroup) -> bool:
    """A prompt a model should answer: not in the safety category, not an xstest should-refuse."""
    subset = group.subset or ""
    return group.meta.get("category") != "safety" and not subset.startswith("should_refuse")


@dataclass
class ScoredSet:
    """A dataset's responses (texts, latents, response token counts) and its pairs."""

    name: str
    groups: list[PreferenceGroup]
    texts: list[str]
    index: PairIndex
    latents: SparseLatents | None = None  # None: only sampled pairs get scored (dev data)
    n_tokens: np.ndarray | None = None


def response_tokens(model, texts: Sequence[str]) -> np.ndarray:
    """Each response's length in tokens of the model's tokenizer (no special tokens)."""
    ids = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return np.array([len(x) for x in ids], dtype=np.int64)


def pairs_of(name: str, groups: Sequence[PreferenceGroup]) -> ScoredSet:
    """The responses and pairs of ``groups``, not scored yet."""
    keys, conversations = response_rows(groups)
    if not conversations:
        raise ValueError(f"{name}: the data holds no responses")
    texts = [c[-1]["content"] for c in conversations]
    index = PairIndex.from_groups(groups, {k: i for i, k in enumerate(keys)})
    if not index.n_pairs:
        raise ValueError(f"{name}: the data holds no preference pairs (chosen and rejected)")
    return ScoredSet(name, list(groups), texts, index)


def score_set(
    name: str, model, groups: Sequence[PreferenceGroup], latents_of: Callable
) -> ScoredSet:
    """Every response of ``groups`` scored through ``latents_of(conversations)``."""
    scored = pairs_of(name, groups)
    _, conversations = response_rows(groups)
    scored.latents = latents_of(conversations)
    scored.n_tokens = response_tokens(model, scored.texts)
    return scored


def sample_rewrites(
    scored: ScoredSet, operators: Sequence[str], n_pairs: int, seed: int
) -> dict[str, tuple[np.ndarray, list[str]]]:
    """Per operator: up to ``n_pairs`` pairs (a seeded order shared by operators) and rewrites.

    Pairs are visited in ``default_rng(seed).permutation(n_pairs)`` order; a pair
    is taken when the operator applies to its rejected response (and, for
    ``harmless_only`` operators, its prompt is :func:`harmless`).
    """
    index = scored.index
    order = np.random.default_rng(seed).permutation(index.n_pairs)
    out = {}
    for name in operators:
        op = OPERATORS[name]
        pairs, texts = [], []
        for p in order:
            group = scored.groups[int(index.group[p])]
            if op.harmless_only and not harmless(group):
                continue
            key = f"{group.group_id}/rejected/{int(index.rejected_index[p])}"
            new = rewrite(name, scored.texts[int(index.rejected_row[p])], seed, key)
            if new is not None:
                pairs.append(int(p))
                texts.append(new)
            if len(pairs) == n_pairs:
                break
        out[name] = (np.array(pairs, dtype=np.int64), texts)
    return out


def score_rewrites(
    model, scored: ScoredSet, rewrites: Mapping[str, tuple[np.ndarray, list[str]]], progress: bool
) -> dict[str, RewriteSample]:
    """One batched forward pass over the sampled originals and all rewrites."""
    index = scored.index
    first_pair = {}  # each sampled original (a rejected row), scored once
    for pairs, _ in rewrites.values():
        for p in pairs:
            first_pair.setdefault(int(index.rejected_row[p]), int(p))
    originals = sorted(first_pair)
    convs = [_conversation(scored, first_pair[r], scored.texts[r]) for r in originals]
    spans = {}
    for name, (pairs, texts) in rewrites.items():
        start = len(convs)
        convs += [_conversation(scored, int(p), t) for p, t in zip(pairs, texts, strict=True)]
        spans[name] = (start, len(convs))
    logger.info(
        "%s: scoring %d originals and %d rewrites",
        scored.name,
        len(originals),
        len(convs) - len(originals),
    )
    pooled = model.pooled_latents(convs, progress=progress)
    position = {r: i for i, r in enumerate(originals)}
    out = {}
    for name, (pairs, texts) in rewrites.items():
        start, stop = spans[name]
        before = [position[int(index.rejected_row[p])] for p in pairs]
        out[name] = RewriteSample(
            name,
            pairs,
            pooled.latents.take(before),
            pooled.latents.take(np.arange(start, stop)),
            tuple(texts),
        )
    return out


def _conversation(scored: ScoredSet, pair: int, text: str) -> list[dict]:
    """The prompt of pair ``pair``'s group with ``text`` as the response."""
    return scored.groups[int(scored.index.group[pair])].conversation(text)


@dataclass
class AuditInputs:
    """What one audit runs on (all computed; the audit itself is numpy)."""

    head: Head
    audit: ScoredSet
    samples: dict[str, RewriteSample]  # on the audit data
    dev: ScoredSet  # the fix's source (the audit data itself when no dev data is given)
    dev_samples: dict[str, RewriteSample]
    properties: list[str]
    names: Mapping[int, str]


def _bias_figures(head: Head, inputs: AuditInputs, seed: int) -> dict[str, dict]:
    rewards = head.rewards(inputs.audit.latents)
    figures = {}
    for name, sample in inputs.samples.items():
        s = summarize(head, sample, inputs.audit.index, rewards, inputs.names, top=0, seed=seed)
        figures[name] = {
            k: s[k] for k in ("n", "median", "median_ci95", "interval90", "mean", "flips")
        }
    return figures


def propose(
    inputs: AuditInputs,
    operator: str,
    coverage: float = 0.8,
    max_features: int = 5,
    factor: float = 0.0,
    seed: int = 0,
) -> tuple[Head, dict[str, object]] | None:
    """The fix for ``operator`` from the dev rewrites, judged on the audit data.

    None when the dev data shows no payment: the 95% interval of the median
    delta-r on the dev rewrites does not lie above 0.
    """
    dev = inputs.dev_samples[operator]
    interval = median_interval(delta_rewards(inputs.head, dev), seed=seed)
    if interval is None or interval[0] <= 0:
        return None
    shares = counterfactual_shares(inputs.head, dev)
    features = carriers(shares, coverage, max_features)
    if not features:
        return None
    fixed, item = apply_fix(inputs.head, features, factor)
    audit = inputs.audit
    prop = OPERATORS[operator].changes
    values = _property_values(audit, [prop])[prop]
    bias_before, bias_after = (
        _bias_figures(inputs.head, inputs, seed),
        _bias_figures(fixed, inputs, seed),
    )
    acc = accuracy_change(inputs.head, fixed, audit.latents, audit.index, audit.groups, seed=seed)
    obs = {
        h: property_audit(values, audit.latents, hd, audit.index, top=0, seed=seed)
        for h, hd in (("before", inputs.head), ("after", fixed))
    }
    report = {
        "operator": operator,
        "property": prop,
        "features": features,
        "explanations": {str(f): inputs.names.get(f, "") for f in features},
        "intervention": item.spec(),
        "dev_share": float(shares.set_index("feature_id").loc[features, "share"].sum()),
        "flipped": acc["flipped"],
        "changed_weights": acc["changed_weights"],
    }
    for when, head_bias, summary in (
        ("before", bias_before, acc["before"]),
        ("after", bias_after, acc["after"]),
    ):
        report[when] = {
            "bias": head_bias[operator],
            "reward_corr": obs[when]["reward_corr"],
            "within_prompt_effect": obs[when]["within_prompt_effect"],
            "other_biases": {k: v for k, v in head_bias.items() if k != operator},
            "pairwise_accuracy": summary["all"],
            "per_source": summary.get("per_source", {}),
            "per_category": summary.get("per_category", {}),
        }
    return fixed, report


def _property_values(scored: ScoredSet, names: Sequence[str]) -> dict[str, np.ndarray]:
    return measure(scored.texts, names, scored.n_tokens)


def audit_report(inputs: AuditInputs, seed: int = 0, top: int = 5) -> dict[str, object]:
    """The JSON-ready report: every property, every operator, one fix per biased operator."""
    audit, head = inputs.audit, inputs.head
    rewards = head.rewards(audit.latents)
    values = _property_values(audit, inputs.properties)
    by_property: dict[str, str] = {OPERATORS[o].changes: o for o in inputs.samples}
    operators = {}
    for name, sample in inputs.samples.items():
        op = OPERATORS[name]
        originals = [audit.texts[int(audit.index.rejected_row[p])] for p in sample.pairs]
        operators[name] = {
            "description": op.description,
            "changes": op.changes,
            "example": {"before": EXAMPLE_TEXT, "after": op.example()},
            "audit": summarize(head, sample, audit.index, rewards, inputs.names, top, seed),
            "dev": summarize(
                head, inputs.dev_samples[name], inputs.dev.index, None, inputs.names, top, seed
            ),
            "examples": examples(head, sample, originals),
        }
    properties = {}
    for name in inputs.properties:
        row = property_audit(
            values[name], audit.latents, head, audit.index, inputs.names, top, seed
        )
        row["description"] = PROPERTIES[name].description
        op = by_property.get(name)
        cf = operators[op]["audit"] if op else None
        row["operator"] = op
        row["counterfactual_delta_median"] = cf["median"] if cf else None
        row["counterfactual_delta_median_ci95"] = cf["median_ci95"] if cf else None
        row["counterfactual_delta_interval90"] = cf["interval90"] if cf else None
        row["counterfactual_top_features"] = cf["top_features"] if cf else []
        properties[name] = row
    fixes = {}
    for name in inputs.samples:
        proposed = propose(inputs, name, seed=seed)
        if proposed is not None:
            fixes[name] = proposed[1]
    return {
        "schema": SCHEMA_VERSION,
        "head": head.hash(),
        "n_responses": audit.latents.n,
        "n_pairs": audit.index.n_pairs,
        "seed": seed,
        "properties": properties,
        "operators": operators,
        "fixes": fixes,
    }


def feature_titles(store: str | None, model: str, d_sae: int) -> dict[int, str]:
    """Feature names for the report: each feature's label, else its best explanation.

    From ``store`` (``--labels``); for the default SARM without one, from the default
    store when it has been built; otherwise none (features are shown by id).
    """
    from feature_store import FeatureStore
    from sarm import cachedir
    from sarm.constants import DEFAULT_MODEL

    if store is None and model == DEFAULT_MODEL and cachedir.default_store_path().is_file():
        store = str(cachedir.default_store_path())
    if store is None:
        return {}
    with FeatureStore.open_for_reading(store) as opened:
        return opened.titles_for(list(range(d_sae)))


def run_audit(
    model,
    groups: Sequence[PreferenceGroup],
    dev_groups: Sequence[PreferenceGroup] | None,
    latents_of: Callable,
    *,
    properties: Sequence[str] | None = None,
    operators: Sequence[str] | None = None,
    pairs_per_operator: int = 200,
    seed: int = 0,
    names: Mapping[int, str] | None = None,
    progress: bool = True,
    samples_file: str | Path | None = None,
) -> AuditInputs:
    """Score everything the audit needs (the forward passes happen here).

    With ``samples_file``: the rewrites' latents are read from it when it exists
    and was made with the same sample settings, else computed and written to it.
    """
    ops = operator_names(operators)
    audit = score_set("data", model, groups, latents_of)
    dev = audit if dev_groups is None else pairs_of("dev data", dev_groups)
    settings = {
        "operators": ops,
        "pairs_per_operator": pairs_per_operator,
        "seed": seed,
        "d_sae": model.d_sae,
        "head": model.head.base().hash(),
        "n_pairs": audit.index.n_pairs,
        "dev_n_pairs": dev.index.n_pairs,
    }
    cached = _cached_samples(samples_file, settings)
    if cached is not None:
        samples, dev_samples = cached
    else:
        samples = score_rewrites(
            model, audit, sample_rewrites(audit, ops, pairs_per_operator, seed), progress
        )
        dev_samples = samples
        if dev_groups is not None:
            rewrites = sample_rewrites(dev, ops, pairs_per_operator, seed)
            dev_samples = score_rewrites(model, dev, rewrites, progress)
        if samples_file is not None:
            save_samples(samples_file, {"audit": samples, "dev": dev_samples}, settings)
    return AuditInputs(
        model.head, audit, samples, dev, dev_samples, property_names(properties), names or {}
    )


def _cached_samples(path, settings: Mapping[str, object]):
    """``(audit samples, dev samples)`` from ``path`` if it matches ``settings``, else None."""
    if path is None or not Path(path).is_file():
        return None
    splits, meta = load_samples(path)
    if {k: meta.get(k) for k in settings} != dict(settings):
        logger.warning("%s was made with other settings; scoring the rewrites again", path)
        return None
    return splits["audit"], splits["dev"]


def shipped_latents(model, model_name: str, progress: bool) -> Callable:
    """``latents_of(conversations)``: the default's shipped latents where they hold them."""
    from sarm import cachedir
    from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows
    from workflows.default_sarm.store import pooled_for

    parts = AuditRows.empty(model.k)
    if model_name == "default":
        parts = AuditRows.read(cachedir.shipped_default_dir() / AUDIT_FILE, model.head)

    def latents_of(conversations):
        pooled, n_scored = pooled_for(model, conversations, parts, progress)
        logger.info("%d responses, %d scored by the model", len(conversations), n_scored)
        return pooled.latents

    return latents_of


def fix_manifest(model, fixed: Head, fix: Mapping[str, object], names: Mapping[int, str]) -> dict:
    """The export manifest of a proposed fix (the same as the editor's exports)."""
    from sarm.export import edit_manifest, model_info

    return edit_manifest(
        fixed,
        model_info(model),
        labels=names,
        metrics_before={"pairwise_accuracy": fix["before"]["pairwise_accuracy"]["accuracy"]},
        metrics_after={"pairwise_accuracy": fix["after"]["pairwise_accuracy"]["accuracy"]},
        note=f"bias audit fix for {fix['operator']}: {fix['intervention']}",
    )


def run_cli(args, model_cfg, data_cfg, resolve_data) -> dict[str, object]:
    """``sarm audit-bias``: load, audit, report, and save or export the chosen fix."""
    from sarm.checkpoints import load_sarm

    progress = not args.quiet
    data = resolve_data(data_cfg.data, skip_malformed=data_cfg.skip_malformed, limit=data_cfg.limit)
    dev = None
    if args.dev_data:
        dev = resolve_data(args.dev_data, skip_malformed=data_cfg.skip_malformed).groups
    model = model_cfg.apply_batching(load_sarm(model_cfg.model, device=model_cfg.device))
    names = feature_titles(args.labels, model_cfg.model, model.d_sae)
    inputs = run_audit(
        model,
        data.groups,
        dev,
        shipped_latents(model, model_cfg.model, progress),
        properties=args.properties,
        operators=args.operators,
        pairs_per_operator=args.pairs_per_operator,
        seed=args.seed,
        names=names,
        progress=progress,
        samples_file=args.samples,
    )
    report = audit_report(inputs, args.seed, args.top)
    report |= {
        "model": model_cfg.model,
        "data": data.source,
        "dev_data": args.dev_data or data.source,
    }
    report["pairs_per_operator"] = args.pairs_per_operator
    if args.fix:
        _keep_fix(args, model, inputs, report, names)
    return report


def _keep_fix(args, model, inputs: AuditInputs, report: dict, names: Mapping[int, str]) -> None:
    from feature_store import FeatureStore
    from sarm.errors import InputError
    from sarm.export import write_head

    proposed = propose(inputs, args.fix, seed=args.seed)
    if proposed is None:
        raise InputError(f"--fix {args.fix}: the audit found no payment to remove for it")
    fixed, fix = proposed
    if args.export_fix:
        write_head(fixed, fix_manifest(model, fixed, fix, names), args.export_fix)
        fix["exported_to"] = args.export_fix
    if args.save_fix:
        with FeatureStore.open(args.store) as store:
            store.save_head(
                args.save_fix,
                fixed.weights,
                fixed.bias,
                parent=fixed.name or None,
                note=f"bias audit fix for {args.fix}: {fix['intervention']}",
                metrics={"pairwise_accuracy": fix["after"]["pairwise_accuracy"]["accuracy"]},
            )
        fix["saved_as"] = args.save_fix
    report["fixes"][args.fix] = fix
