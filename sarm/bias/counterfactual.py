"""Counterfactual bias audit: rewrite responses, rescore, decompose every delta-r exactly.

For a sample of pairs, an operator (:mod:`sarm.bias.operators`) rewrites the
*rejected* response; the rewrite is scored by a real forward pass. With the
original's latents ``z`` and the rewrite's ``z'``,
``delta_r = r(z') - r(z) = sum_i w_i (z'_i - z_i)`` (the bias cancels), so the
per-feature terms ``w_i (z'_i - z_i)`` (:func:`feature_deltas`) sum to delta-r
exactly: they say which features pay for the markdown, the flattery, ...

A feature's ``share`` is its mean term over the sample divided by the mean
delta-r: shares over all features sum to 1. A rejected response that gains
more than its margin flips the pair: ``flips`` counts those among the pairs
ranked right before the rewrite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sarm.bias.stats import median_interval, spread
from sarm.evaluate import PairIndex
from sarm.head import Head
from sarm.latents import SparseLatents

__all__ = [
    "RewriteSample",
    "counterfactual_shares",
    "delta_rewards",
    "feature_deltas",
    "sample_pairs",
    "summarize",
]


@dataclass(frozen=True)
class RewriteSample:
    """One operator's rewrites: the sampled pairs and both responses' latents (row-aligned).

    ``pairs`` are positions in the dataset's :class:`PairIndex`; row ``j`` of
    ``original`` / ``rewritten`` is pair ``pairs[j]``'s rejected response before
    and after the rewrite; ``texts`` are the rewritten responses.
    """

    operator: str
    pairs: np.ndarray
    original: SparseLatents
    rewritten: SparseLatents
    texts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.pairs)
        if self.original.n != n or self.rewritten.n != n:
            raise ValueError(
                f"{self.operator}: {n} pairs but {self.original.n} original and "
                f"{self.rewritten.n} rewritten latent rows"
            )


def sample_pairs(eligible: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to ``n`` pair positions drawn without replacement from ``eligible`` (sorted)."""
    eligible = np.asarray(eligible, dtype=np.int64)
    if n < 1:
        raise ValueError(f"the number of pairs per operator must be >= 1, got {n}")
    if len(eligible) <= n:
        return np.sort(eligible)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(eligible, size=n, replace=False))


def delta_rewards(head: Head, sample: RewriteSample) -> np.ndarray:
    """``r(rewritten) - r(original)`` per sampled response (float64)."""
    return head.rewards(sample.rewritten) - head.rewards(sample.original)


def _dense_contributions(head: Head, latents: SparseLatents) -> np.ndarray:
    out = np.zeros((latents.n, latents.d_sae))
    np.add.at(out, (latents.row_ids, latents.indices), head.contributions(latents))
    return out


def feature_deltas(head: Head, sample: RewriteSample) -> np.ndarray:
    """``[n, d_sae]`` terms ``w_i (z'_i - z_i)``; row sums equal :func:`delta_rewards`."""
    return _dense_contributions(head, sample.rewritten) - _dense_contributions(
        head, sample.original
    )


def counterfactual_shares(head: Head, sample: RewriteSample) -> pd.DataFrame:
    """``feature_id, mean_delta, share, weight, n_changed`` ranked by share (largest first).

    ``share = mean_delta_i / mean(delta_r)``; over all features the shares sum to 1.
    Only features whose term is non-zero for some response are listed.
    """
    terms = feature_deltas(head, sample)
    mean = terms.mean(axis=0) if len(terms) else np.zeros(head.size)
    total = float(mean.sum())
    changed = (terms != 0).sum(axis=0)
    keep = np.flatnonzero(changed)
    table = pd.DataFrame(
        {
            "feature_id": keep,
            "mean_delta": mean[keep],
            "share": mean[keep] / total if total else np.nan,
            "weight": head.weights[keep].astype(np.float64),
            "n_changed": changed[keep],
        }
    )
    table.attrs["mean_delta"] = total
    return table.sort_values(["share", "feature_id"], ascending=[False, True]).reset_index(
        drop=True
    )


def _flips(
    delta: np.ndarray, sample: RewriteSample, index: PairIndex, rewards: np.ndarray | None
) -> int | None:
    """Pairs ranked right before whose rejected response, rewritten, now wins or ties."""
    if rewards is None:
        return None
    chosen = rewards[index.chosen_row[sample.pairs]]
    rejected = rewards[index.rejected_row[sample.pairs]]
    return int(((chosen > rejected) & (chosen <= rejected + delta)).sum())


def summarize(
    head: Head,
    sample: RewriteSample,
    index: PairIndex,
    rewards: np.ndarray | None,
    names: Mapping[int, str] | None = None,
    top: int = 5,
    seed: int = 0,
) -> dict[str, object]:
    """delta-r's ``median`` (+ 95% bootstrap interval), 90% spread, flips and top features.

    ``rewards`` are the dataset's rewards under ``head`` (for the flip count;
    None when only the sampled pairs were scored: ``flips`` is then None).
    """
    delta = delta_rewards(head, sample)
    shares = counterfactual_shares(head, sample)
    names = names or {}
    n = len(delta)
    return {
        "n": n,
        "median": float(np.median(delta)) if n else None,
        "median_ci95": median_interval(delta, seed=seed),
        "interval90": spread(delta),
        "mean": float(delta.mean()) if n else None,
        "frac_positive": float((delta > 0).mean()) if n else None,
        "flips": _flips(delta, sample, index, rewards),
        "top_features": [
            {
                "id": int(row.feature_id),
                "explanation": names.get(int(row.feature_id), ""),
                "share": None if math.isnan(row.share) else float(row.share),
                "mean_delta": float(row.mean_delta),
                "weight": float(row.weight),
            }
            for row in shares.head(top).itertuples(index=False)
        ],
    }


def examples(
    head: Head, sample: RewriteSample, originals: Sequence[str], k: int = 2, top: int = 5
) -> list[dict[str, object]]:
    """The first ``k`` rewrites: texts, delta-r and its decomposition.

    ``terms`` lists the ``top`` largest ``|w_i (z'_i - z_i)|`` as ``{id, term}``;
    ``rest`` is the sum of all the other terms, so ``sum(terms) + rest = delta_r``.
    """
    delta = delta_rewards(head, sample)
    deltas = feature_deltas(head, sample)
    out = []
    for j in range(min(k, len(sample.texts))):
        order = np.argsort(-np.abs(deltas[j]), kind="stable")[:top]
        order = order[deltas[j][order] != 0]
        out.append(
            {
                "before": originals[j],
                "after": sample.texts[j],
                "delta_r": float(delta[j]),
                "terms": [{"id": int(f), "term": float(deltas[j][f])} for f in order],
                "rest": float(deltas[j].sum() - deltas[j][order].sum()),
            }
        )
    return out


def _latent_arrays(prefix: str, latents: SparseLatents) -> dict[str, np.ndarray]:
    return {
        f"{prefix}.indptr": latents.indptr,
        f"{prefix}.indices": latents.indices,
        f"{prefix}.values": latents.values,
    }


def _latents_from(arrays: Mapping[str, np.ndarray], prefix: str, d_sae: int) -> SparseLatents:
    return SparseLatents(
        arrays[f"{prefix}.indptr"], arrays[f"{prefix}.indices"], arrays[f"{prefix}.values"], d_sae
    )


def save_samples(
    path, splits: Mapping[str, Mapping[str, RewriteSample]], meta: Mapping[str, object]
) -> None:
    """Write ``{split: {operator: sample}}`` and ``meta`` to one ``.npz`` (no pickles).

    ``meta`` must hold ``d_sae``; it is stored as JSON beside the arrays.
    """
    import json
    from pathlib import Path

    arrays: dict[str, np.ndarray] = {}
    for split, samples in splits.items():
        for op, sample in samples.items():
            key = f"{split}.{op}"
            arrays[f"{key}.pairs"] = sample.pairs
            arrays[f"{key}.texts"] = np.array(json.dumps(list(sample.texts)))
            arrays |= _latent_arrays(f"{key}.original", sample.original)
            arrays |= _latent_arrays(f"{key}.rewritten", sample.rewritten)
    arrays["meta"] = np.array(json.dumps(dict(meta)))
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_samples(path) -> tuple[dict[str, dict[str, RewriteSample]], dict[str, object]]:
    """What :func:`save_samples` wrote: ``({split: {operator: sample}}, meta)``."""
    import json

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"]))
    d_sae = int(meta["d_sae"])
    out: dict[str, dict[str, RewriteSample]] = {}
    for key in sorted(k.removesuffix(".pairs") for k in arrays if k.endswith(".pairs")):
        split, op = key.split(".", 1)
        out.setdefault(split, {})[op] = RewriteSample(
            op,
            arrays[f"{key}.pairs"].astype(np.int64),
            _latents_from(arrays, f"{key}.original", d_sae),
            _latents_from(arrays, f"{key}.rewritten", d_sae),
            tuple(json.loads(str(arrays[f"{key}.texts"]))),
        )
    return out, meta
