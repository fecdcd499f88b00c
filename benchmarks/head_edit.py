"""Head edit -> dataset metrics, recomputed from cached sparse latents.

After one weight change the dashboard needs every reward, the pairwise accuracy
and the per-subset accuracy again. ``Head.edit(...).rewards`` updates the base
head's cached rewards from the edited feature's column only; the baseline is a
full recompute ``z . w`` over every non-zero, measured in the same process. Synthetic data: 64 non-zeros per
example, 65,536 features, two examples per pair, 8 subsets; the edited feature
is a frequent one (active in ~10% of examples), the slow case.

Usage: ``python benchmarks/head_edit.py [--repeats 20]``; the last line is
``recompute_ms_10k=<x> recompute_ms_100k=<y>`` (target: < 50 ms at 100k pairs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from sarm.evaluate import PairIndex, pairwise_accuracy, per_subset_accuracy
from sarm.head import Head
from sarm.head import rewards as latent_rewards
from sarm.latents import SparseLatents

D_SAE, NNZ, SUBSETS = 65_536, 64, 8


def synthetic(n_pairs: int, seed: int = 0) -> tuple[SparseLatents, PairIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 2 * n_pairs
    hot = rng.random(n) < 0.1  # feature 7 is active in ~10% of examples
    ids = rng.integers(8, D_SAE, size=(n, NNZ), dtype=np.int32)
    ids[hot, 0] = 7
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


def measure(n_pairs: int, repeats: int) -> tuple[float, float]:
    latents, index, w = synthetic(n_pairs)
    head = Head(w)
    head.rewards(latents.warm())  # base rewards and column index once, as the app does at load

    def incremental() -> None:
        r = head.edit({7: float(np.random.normal())}).rewards(latents)
        pairwise_accuracy(r, index), per_subset_accuracy(r, index)

    def full() -> None:
        new_w = w.copy()
        new_w[7] = float(np.random.normal())
        r = latent_rewards(latents, new_w)
        pairwise_accuracy(r, index), per_subset_accuracy(r, index)

    ms_inc, ms_full = median_ms(incremental, repeats), median_ms(full, repeats)
    print(
        f"{n_pairs:>7} pairs, {latents.nnz:>10} non-zeros: edit+metrics {ms_inc:7.2f} ms, "
        f"full recompute {ms_full:7.2f} ms, speed-up {ms_full / ms_inc:5.1f}x"
    )
    return ms_inc, ms_full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    small, _ = measure(10_000, args.repeats)
    large, _ = measure(100_000, args.repeats)
    print(f"recompute_ms_10k={small:.2f} recompute_ms_100k={large:.2f}")


if __name__ == "__main__":
    main()
