"""Feature store query latency at scale (synthetic store, real DuckDB).

Builds (or reuses, with --store PATH) a store of 65,536 features and 100,000
examples with 64 non-zero latents each (6.4 M activation rows), then times
the dashboard's queries. Each latency is printed next to the rows it covers.
Last line: ``top_examples_p95_ms=<x> features_page_ms=<y> label_search_ms=<z> rows=<n>``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from feature_store import FeatureStore
from feature_store.synthetic import SyntheticSpec, build_synthetic_store

WORDS = [
    "refusal",
    "code",
    "python",
    "apology",
    "markdown",
    "list",
    "safety",
    "math",
    "politeness",
    "length",
    "hedging",
    "citation",
    "emoji",
    "greeting",
    "french",
]


def timed(fn: Callable[[], object], repeats: int) -> np.ndarray:
    """Wall-clock milliseconds of ``repeats`` calls (after one warm-up call)."""
    fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1000
    return out


def open_or_build(path: Path, spec: SyntheticSpec) -> FeatureStore:
    if path.exists():
        store = FeatureStore.open(path)
        if store.summary()["n_examples"] == 2 * spec.n_pairs and store.d_sae == spec.d_sae:
            print(f"reusing {path}")
            return store
        raise SystemExit(f"{path} exists but holds another store; remove it or pick another path")
    t0 = time.perf_counter()
    store = build_synthetic_store(path, spec, progress=True)
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return store


def add_labels(store: FeatureStore, n: int, rng: np.random.Generator) -> None:
    have = len(store.labels_frame())
    for fid in rng.choice(store.d_sae, size=max(0, n - have), replace=False):
        words = rng.choice(WORDS, size=3, replace=False)
        store.set_label(
            int(fid), f"{words[0]} {words[1]}", f"fires on {words[2]} text", "bench", "auto"
        )


def report(name: str, ms: np.ndarray, rows: str) -> tuple[float, float]:
    p50, p95 = np.percentile(ms, [50, 95])
    print(f"{name:<28} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  over {rows}")
    return float(p50), float(p95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, help="store path to build or reuse (default: a temp dir)"
    )
    parser.add_argument("--pairs", type=int, default=50_000, help="pairs (examples = 2 x pairs)")
    parser.add_argument("--features", type=int, default=65_536)
    parser.add_argument("--nnz", type=int, default=64)
    parser.add_argument("--labels", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    spec = SyntheticSpec(n_pairs=args.pairs, d_sae=args.features, nnz=args.nnz, chunk_size=8192)
    path = args.store or Path(tempfile.mkdtemp(prefix="sarm-bench-")) / "store.duckdb"
    store = open_or_build(path, spec)
    rng = np.random.default_rng(0)
    add_labels(store, args.labels, rng)
    summary = store.summary()
    rows, n_ex = summary["n_latents"], summary["n_examples"]
    print(
        f"store: {n_ex} examples, {rows} activation rows, {store.d_sae} features, "
        f"{summary['n_labelled_features']} labels, {summary['size_bytes'] / 1e6:.1f} MB "
        f"({summary['bytes_per_1000_examples'] / 1e6:.2f} MB per 1,000 examples)"
    )
    active = store.features(min_frequency=1e-9, limit=None)["feature_id"].to_numpy()
    fids = iter(rng.choice(active, size=args.repeats + 1))
    _, top_p95 = report(
        "top_examples(limit=20)",
        timed(lambda: store.top_examples(int(next(fids)), 20), args.repeats),
        f"{rows} rows",
    )
    fids50 = iter(rng.choice(active, size=21))
    report(
        "top_examples(limit=50) live",
        timed(lambda: store.top_examples(int(next(fids50)), 50), 20),
        f"{rows} rows",
    )
    _, page_p95 = report(
        "features page (|contrib|)",
        timed(lambda: store.features(order_by="abs_contribution", limit=50), 20),
        f"{store.d_sae} features",
    )
    report(
        "features filtered+sorted",
        timed(
            lambda: store.features(
                order_by="salience", min_frequency=0.01, labelled=True, limit=50
            ),
            20,
        ),
        f"{store.d_sae} features",
    )
    terms = iter(rng.choice(WORDS, size=51))
    _, search_p95 = report(
        "search_labels",
        timed(lambda: store.search_labels(str(next(terms))[:5]), 50),
        f"{summary['n_labelled_features']} labels",
    )
    report(
        "example(id)", timed(lambda: store.example(int(rng.integers(n_ex))), 50), f"{n_ex} examples"
    )
    t0 = time.perf_counter()
    matrix = store.latent_matrix()
    print(
        f"latent_matrix()             {(time.perf_counter() - t0) * 1000:8.1f} ms  for {len(matrix.values)} non-zeros"
    )
    store.close()
    print(
        f"top_examples_p95_ms={top_p95:.2f} features_page_ms={page_p95:.2f} "
        f"label_search_ms={search_p95:.2f} rows={rows}"
    )


if __name__ == "__main__":
    main()
