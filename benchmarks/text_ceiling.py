"""The cost of the text ceiling beside the stats explainer it is reported with.

On a built store (default: the default's, ``sarm build-default`` first), times
``explain_stats`` and ``text_ceilings`` over the same features, alternating rounds
in one process, and prints the median ratio (ceiling / explain) as the last line.
Read-only: nothing is written to the store.
Usage: ``python benchmarks/text_ceiling.py [--store S] [--top-weight 500] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from feature_store import FeatureStore
from feature_store.explanations import explain_stats, top_weight_features
from feature_store.text_ceiling import text_ceilings
from sarm import cachedir


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=None)
    parser.add_argument("--top-weight", type=int, default=500, metavar="N")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    path = args.store or cachedir.default_store_path()
    with FeatureStore.open(path, read_only=True) as store:
        features = top_weight_features(store, args.top_weight)
        explain, ceiling = [], []
        for r in range(args.rounds):
            explain.append(_timed(lambda: explain_stats(store, features)))
            ceiling.append(_timed(lambda: text_ceilings(store, features)))
            print(f"round {r}: explain {explain[-1]:.2f} s, ceiling {ceiling[-1]:.2f} s")
    print(f"{len(features)} features of {path}")
    ratio = statistics.median(c / e for c, e in zip(ceiling, explain, strict=True))
    print(f"ceiling_vs_stats_explain={ratio:.2f}")


if __name__ == "__main__":
    main()
