"""Feature store query latency at scale (synthetic store, real DuckDB, read-only connection).

Builds (or reuses, with --store PATH) a store of ``--features`` features whose
``--rows`` latent rows are ``examples x k`` (default: 6.4 M = 100,000 examples x
64), with feature frequencies shaped like the default SARM's store (``--shape
default``: its measured profile and hot features; see docs/scale.md), times the
statistics refresh, then reopens it read-only (as the dashboard does) and times
the dashboard's queries. Unless ``--no-evidence``, the store also holds feature
evidence in the shapes ``sarm index`` writes (every response's tokens, and a
window per response x feature active at the scored token: one per latent row;
``feature_store.synthetic.add_synthetic_evidence``), the refresh aggregates it,
the stats explainer explains every firing feature, and the explanation and
bias-audit reads are timed too: a feature page's evidence, the explanations
the features table shows, the names of every feature for the bias report.
Each latency is printed next to the rows it covers.
The real shape: ``--rows 30000000 --features 65536 --k 192``.
Last line: ``top_examples_p95_ms=<x> features_page_ms=<y> feature_stats_refresh_s=<z>
store_mb=<m> ...`` (targets at 30 M rows on 2 cores: < 50 ms and < 300 ms).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from feature_store import FeatureStore
from feature_store.explanations import run_stats_explainer
from feature_store.stats import refresh_stats
from feature_store.synthetic import SyntheticSpec, add_synthetic_evidence, build_synthetic_store

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


def open_or_build(path: Path, spec: SyntheticSpec, evidence: bool) -> tuple[float, float]:
    """Build the store (unless it is there; with evidence unless ``evidence`` is False),
    then time one statistics refresh.

    Returns ``(build seconds, refresh seconds)``; the store is closed again.
    """
    build_s = 0.0
    if path.exists():
        store = FeatureStore.open(path)
        if store.summary()["n_examples"] != 2 * spec.n_pairs or store.d_sae != spec.d_sae:
            raise SystemExit(f"{path} exists but holds another store; remove it or pick another")
        print(f"reusing {path}")
    else:
        t0 = time.perf_counter()
        store = build_synthetic_store(path, spec, progress=True)
        build_s = time.perf_counter() - t0
        print(f"built {path} in {build_s:.1f} s (statistics included)")
    with store:
        if evidence and _windows(store) == 0:
            t0 = time.perf_counter()
            add_synthetic_evidence(store)
            print(f"synthetic evidence written in {time.perf_counter() - t0:.1f} s")
            build_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        refresh_stats(store, top_n=20)
        refresh_s = time.perf_counter() - t0
        store.checkpoint()
    return build_s, refresh_s


def _windows(store: FeatureStore) -> int:
    with store.read("counting evidence windows") as cur:
        return int(cur.execute("SELECT count(*) FROM evidence_windows").fetchone()[0])


def add_labels(store: FeatureStore, n: int, rng: np.random.Generator) -> None:
    have = len(store.labels_frame())
    for fid in rng.choice(store.d_sae, size=max(0, min(n, store.d_sae) - have), replace=False):
        words = rng.choice(WORDS, size=3, replace=False)
        store.set_label(
            int(fid), f"{words[0]} {words[1]}", f"fires on {words[2]} text", "bench", "auto"
        )


def used_mb(store: FeatureStore) -> tuple[float, dict[str, float]]:
    """MB of the DuckDB blocks in use (the file also keeps freed ones), and per big table."""
    with store.read("measuring the store") as cur:
        [(block, used)] = cur.execute(
            "SELECT block_size, used_blocks FROM pragma_database_size()"
        ).fetchall()
        tables = {
            name: cur.execute(
                "SELECT count(DISTINCT block_id) FROM pragma_storage_info(?)", [name]
            ).fetchall()[0][0]
            * block
            / 1e6
            for name in (
                "latents",
                "latents_by_feature",
                "examples",
                "feature_examples",
                "evidence_windows",
                "evidence_responses",
                "feature_window_splits",
            )
        }
    return block * used / 1e6, tables


def explanation_queries(
    store: FeatureStore, active: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    """Explain every firing feature (stats explainer), then time the reads that use it."""
    t0 = time.perf_counter()
    found = run_stats_explainer(store, log=print)
    explain_s = time.perf_counter() - t0
    print(f"stats explainer: {found.n_explained} features in {explain_s:.1f} s")
    fids = iter(rng.choice(active, size=51))
    _, evidence_p95 = report(
        "feature page evidence",
        timed(lambda: store.feature_evidence(int(next(fids))), 50),
        f"{_windows(store)} windows",
    )
    _, shown_p95 = report(
        "explanations shown",
        timed(store.display_explanations, 10),
        f"{found.n_explained} explained features",
    )
    _, titles_p95 = report(
        "bias report titles",
        timed(lambda: store.titles_for(list(range(store.d_sae))), 10),
        f"{store.d_sae} features",
    )
    return {
        "feature_evidence_ms": evidence_p95,
        "explanations_shown_ms": shown_p95,
        "titles_ms": titles_p95,
        "explain_s": explain_s,
    }


def report(name: str, ms: np.ndarray, rows: str) -> tuple[float, float]:
    p50, p95 = np.percentile(ms, [50, 95])
    print(f"{name:<28} p50 {p50:8.2f} ms  p95 {p95:8.2f} ms  over {rows}")
    return float(p50), float(p95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--store", type=Path, help="store path to build or reuse (default: a temp dir)"
    )
    parser.add_argument("--rows", type=int, default=6_400_000, help="latent rows = examples x k")
    parser.add_argument("--features", type=int, default=65_536)
    parser.add_argument("--k", "--nnz", dest="k", type=int, default=64, help="latents per example")
    parser.add_argument("--shape", choices=("default", "powerlaw"), default="default")
    parser.add_argument("--labels", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--no-evidence", action="store_true", help="a store without evidence")
    args = parser.parse_args()
    n_pairs = max(1, args.rows // (2 * args.k))
    spec = SyntheticSpec(
        n_pairs=n_pairs, d_sae=args.features, nnz=args.k, chunk_size=8192, shape=args.shape
    )
    path = args.store or Path(tempfile.mkdtemp(prefix="sarm-bench-")) / "store.duckdb"
    build_s, refresh_s = open_or_build(path, spec, not args.no_evidence)
    store = FeatureStore.open_for_reading(path)
    rng = np.random.default_rng(0)
    add_labels(store, args.labels, rng)
    summary = store.summary()
    rows, n_ex = summary["n_latents"], summary["n_examples"]
    store_mb, tables = used_mb(store)
    print(
        f"store (read-only): {n_ex} examples, {rows} activation rows, {store.d_sae} features, "
        f"{summary['n_labelled_features']} labels; {store_mb:.1f} MB in use "
        f"({store_mb / (rows / 1e6):.1f} MB per million latent rows; file "
        f"{summary['size_bytes'] / 1e6:.1f} MB with the blocks freed by refreshes); "
        f"statistics refresh {refresh_s:.1f} s"
    )
    print("  " + ", ".join(f"{name} {mb:.1f} MB" for name, mb in tables.items()))
    stats = store.features(order_by="frequency", limit=None, min_frequency=1e-9)
    active = stats["feature_id"].to_numpy()
    print(
        f"feature frequencies: top {stats['frequency'].iloc[0]:.3f}, "
        f"median active {stats['frequency'].median():.5f}, {len(active)} of {store.d_sae} active"
    )
    fids = iter(rng.choice(active, size=args.repeats + 1))
    _, top_p95 = report(
        "top_examples(limit=20)",
        timed(lambda: store.top_examples(int(next(fids)), 20), args.repeats),
        f"{rows} rows",
    )
    hot = iter(np.resize(active[:8], 21))
    report(
        "top_examples(20) hot",
        timed(lambda: store.top_examples(int(next(hot)), 20), 20),
        f"{int(stats['n_active'].iloc[0])} rows of the hottest",
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
    figures = {} if args.no_evidence else explanation_queries(store, active, rng)
    terms = iter(rng.choice(WORDS, size=51))
    _, search_p95 = report(
        "search_labels",
        timed(lambda: store.search_labels(str(next(terms))[:5]), 50),
        f"{summary['n_labelled_features']} labels",
    )
    report(
        "example(id)", timed(lambda: store.example(int(rng.integers(n_ex))), 50), f"{n_ex} examples"
    )
    store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory of this process (build and queries): {rss_mb:.0f} MB")
    print(
        f"top_examples_p95_ms={top_p95:.2f} features_page_ms={page_p95:.2f} "
        f"feature_stats_refresh_s={refresh_s:.1f} store_mb={store_mb:.0f} "
        + "".join(f"{k}={v:.2f} " for k, v in figures.items())
        + f"label_search_ms={search_p95:.2f} build_s={build_s:.0f} rows={rows}"
    )


if __name__ == "__main__":
    main()
