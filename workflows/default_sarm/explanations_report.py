"""Coverage and scores of a store's explanations, and sample explanations with their windows.

``python -m workflows.default_sarm.explanations_report [--store PATH] [--n 10] [--top-weight 100]``
(default: the default store). Prints: features that fire with a non-zero head weight,
how many have a ``stats`` explanation and a score, the score distribution (with the
share above chance), and ``--n`` explanations (the strongest |mean contribution|
features among the scored, or with ``--top-weight N`` the first scored of the N
largest |head weight|) with their scores, the text ceiling of their detection
(``sarm.explain.ceiling``) and their top windows.
"""

from __future__ import annotations

import argparse

import numpy as np

from feature_store import FeatureStore
from feature_store.explanations import top_weight_features
from feature_store.text_ceiling import text_ceilings
from sarm import cachedir
from sarm.explain.text import window_line


def report(store: FeatureStore, n: int, top_weight: int | None = None) -> list[str]:
    lines = []
    ex = store.explanations()
    stats = ex[ex["source"] == "stats"].set_index("feature")
    feats = store.features(limit=None)
    firing = feats[(feats["n_active"] > 0) & (feats["weight"] != 0)]
    covered = firing["feature_id"].isin(stats.index)
    scored = stats.reindex(firing["feature_id"])["score"].notna()
    meta = store.meta()
    lines.append(f"evidence coverage: {meta.get('evidence_coverage') or 'every indexed response'}")
    lines.append(
        f"features firing with non-zero weight: {len(firing)}; with a stats explanation: "
        f"{int(covered.sum())}; with a score: {int(scored.sum())}"
    )
    s = stats["score"].dropna().to_numpy(float)
    if s.size:
        q = np.percentile(s, [10, 25, 50, 75, 90])
        lines.append(
            f"scores (n={s.size}): median {np.median(s):.3f}; p10/p25/p50/p75/p90 "
            + "/".join(f"{v:.2f}" for v in q)
            + f"; above 0.5: {(s > 0.5).mean():.0%}; >= 0.75: {(s >= 0.75).mean():.0%}"
        )
        hist, edges = np.histogram(s, bins=[0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001])
        lines.append(
            "  "
            + ", ".join(
                f"[{a:.1f},{min(b, 1):.1f}{']' if b > 1 else ')'}: {c}"
                for a, b, c in zip(edges[:-1], edges[1:], hist, strict=True)
            )
        )
    if top_weight:
        order = top_weight_features(store, top_weight)
    else:
        ranked = firing.assign(a=firing["mean_contribution"].abs()).sort_values(
            "a", ascending=False
        )
        order = ranked["feature_id"].tolist()
    picked = [f for f in order if f in stats.index and not np.isnan(stats.loc[f, "score"])][:n]
    ceilings = text_ceilings(store, picked)
    weights = firing.set_index("feature_id")["weight"]
    for fid in picked:
        r = stats.loc[fid]
        scores = r["details"].get("scores", {})
        ceiling = "n/a" if ceilings.get(fid) is None else f"{ceilings[fid]:.2f}"
        lines.append(
            f"\nf{fid} (weight {weights.get(fid, 0.0):+.3f}) · {r['text']}\n"
            f"    detection {r['score']:.2f} (uncontrolled {_num(scores.get('uncontrolled'))}), "
            f"fuzzing {_num(scores.get('fuzzing'))}, text ceiling {ceiling}; "
            f"{r['details'].get('n_heldout')} held-out windows"
        )
        for w in store.feature_evidence(int(fid))["windows"][:3]:
            lines.append(f"    {window_line(w, 160)}")
    return lines


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--top-weight", type=int, default=None, metavar="N")
    args = parser.parse_args()
    with FeatureStore.open(args.store or cachedir.default_store_path(), read_only=True) as store:
        print("\n".join(report(store, args.n, args.top_weight)))


if __name__ == "__main__":
    main()
