"""Coverage and scores of a store's explanations, and sample explanations with their windows.

``python -m workflows.default_sarm.explanations_report [--store PATH] [--n 10]``
(default: the default store). Prints: features that fire with a non-zero head weight,
how many have a ``stats`` explanation and a score, the score distribution (with the
share above chance), and ``--n`` explanations (the strongest |mean contribution|
features among the scored) with their top windows.
"""

from __future__ import annotations

import argparse

import numpy as np

from feature_store import FeatureStore
from sarm import cachedir
from sarm.explain.text import window_line


def report(store: FeatureStore, n: int) -> list[str]:
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
    top = firing.assign(a=firing["mean_contribution"].abs()).sort_values("a", ascending=False)
    shown = 0
    for fid in top["feature_id"]:
        if fid not in stats.index or np.isnan(stats.loc[fid, "score"]) or shown == n:
            continue
        shown += 1
        r = stats.loc[fid]
        lines.append(
            f"\nf{fid} · {r['text']}  (score {r['score']:.2f}, {r['details'].get('n_heldout')} held-out windows)"
        )
        for w in store.feature_evidence(int(fid))["windows"][:3]:
            lines.append(f"    {window_line(w, 160)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    with FeatureStore.open(args.store or cachedir.default_store_path(), read_only=True) as store:
        print("\n".join(report(store, args.n)))


if __name__ == "__main__":
    main()
