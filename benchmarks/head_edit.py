"""Head edit -> dataset metrics, recomputed from cached sparse latents.

After a weight edit the dashboard needs every reward and the dataset metrics
again (``evaluate_arrays``: pairwise, per-subset and best-of-n accuracy,
margins). ``Head.edit(...).rewards`` updates the base
head's cached rewards from the edited features' columns only (the latents' CSC
view); the baseline is a full recompute ``z . w`` over every non-zero, measured
in the same process. Synthetic data: 64 non-zeros per example, 65,536
features, two examples per pair, 8 subsets. The edited features are frequent
ones, the slow case: with ``--changed 1`` (a slider) one feature active in ~10%
of examples; with ``--changed C > 1`` (a bias fix) C features active in ~5% each
(the default store's 50 most frequent features fire in 14-36% of its responses
at k = 64 of 4,096; scaled to k = 192 of 65,536 that is 2-7%).

Usage: ``python benchmarks/head_edit.py [--repeats 20]``: last line
``recompute_ms_10k=<x> recompute_ms_100k=<y>`` (target: < 50 ms at 100k pairs);
``python benchmarks/head_edit.py --pairs 1000000 --changed 50``: last line
``recompute_ms_1m=<x>`` (target: < 50 ms).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sarm.evaluate import PairIndex, evaluate_arrays
from sarm.head import Head
from sarm.head import rewards as latent_rewards
from sarm.latents import SparseLatents

D_SAE, NNZ, SUBSETS = 65_536, 64, 8


def synthetic(
    n_pairs: int, changed: int = 1, seed: int = 0
) -> tuple[SparseLatents, PairIndex, np.ndarray]:
    """Latents where features ``0..changed-1`` are the frequent ones (see the module doc)."""
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs
    frequency = 0.1 if changed == 1 else 0.05
    ids = rng.integers(changed, D_SAE, size=(n, NNZ), dtype=np.int32)
    for f in range(changed):  # feature f takes slot f of the rows where it is active
        ids[rng.random(n) < frequency, f] = f
    ids.sort(axis=1)
    vals = rng.gamma(2.0, 1.0, size=(n, NNZ)).astype(np.float32)
    latents = SparseLatents(np.arange(0, n * NNZ + 1, NNZ), ids.ravel(), vals.ravel(), D_SAE)
    subset = rng.integers(0, SUBSETS, size=n_pairs)
    index = PairIndex.from_arrays(
        np.arange(0, n, 2),
        np.arange(1, n, 2),
        subset=subset,
        subset_names=[f"s{i}" for i in range(SUBSETS)],
    )
    return latents, index, rng.normal(size=D_SAE) * 0.05


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(n_pairs: int, repeats: int, changed: int = 1) -> tuple[float, float]:
    latents, index, w = synthetic(n_pairs, changed)
    head = Head(w)
    head.rewards(latents.warm())  # base rewards and column index once, as the app does at load
    features = np.arange(changed)
    rng = np.random.default_rng(1)

    def incremental() -> None:
        edit = dict(zip(features.tolist(), rng.normal(size=changed).tolist(), strict=True))
        r = head.edit(edit).rewards(latents)
        evaluate_arrays(r, index)

    def full() -> None:
        new_w = w.copy()
        new_w[features] = rng.normal(size=changed)
        r = latent_rewards(latents, new_w)
        evaluate_arrays(r, index)

    ms_inc = median_ms(incremental, repeats)
    ms_full = median_ms(full, max(3, repeats // 4) if n_pairs > 200_000 else repeats)
    print(
        f"{n_pairs:>7} pairs, {latents.nnz:>10} non-zeros, {changed} features changed: "
        f"edit+metrics {ms_inc:7.2f} ms, full recompute {ms_full:7.2f} ms, "
        f"speed-up {ms_full / ms_inc:5.1f}x"
    )
    return ms_inc, ms_full


def label(n_pairs: int) -> str:
    """``10k``, ``1m``, ... for the figure's key."""
    if n_pairs % 1_000_000 == 0:
        return f"{n_pairs // 1_000_000}m"
    return f"{n_pairs // 1000}k" if n_pairs % 1000 == 0 else str(n_pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pairs", type=int, help="one size only (default: 10k and 100k)")
    parser.add_argument("--changed", type=int, default=1, help="features edited at once")
    args = parser.parse_args()
    if args.pairs:
        ms, _ = measure(args.pairs, args.repeats, args.changed)
        print(f"recompute_ms_{label(args.pairs)}={ms:.2f}")
        return
    small, _ = measure(10_000, args.repeats, args.changed)
    large, _ = measure(100_000, args.repeats, args.changed)
    print(f"recompute_ms_10k={small:.2f} recompute_ms_100k={large:.2f}")


if __name__ == "__main__":
    main()
