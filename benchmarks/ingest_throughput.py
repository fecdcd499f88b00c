"""Ingest throughput vs a bare truncated forward, on the embedded backbone, in one process.

``ingest_vs_forward`` = ingest tokens/s / bare forward tokens/s at the same
batch size (target >= 0.85). The ingest side is the whole ``feature_store.ingest``
call on a fresh store: chat rendering, tokenisation, the forward passes, the
standardisation, SAE and head, the chunked DuckDB commits, the statistics
refresh and the checkpoint. The bare side is only the truncated backbone's
forward over pre-tokenised batches, sorted by length over the whole dataset
(the least padding possible), so the ratio is conservative. Tokens are real
(unpadded) tokens on both sides. Routes alternate (ABBA) after a warm-up of both; medians are reported.
``evidence_ingest_vs_forward`` (the last line) is the same with feature evidence
kept (``evidence=EvidenceSpec()``: every response token SAE-encoded, windows and
counters written with each chunk, aggregates at the end; target >= 0.85).
The SAE has the demo's size (576 -> 4096, k = 32) with random weights.
It also times the per-token highlight of a top example (computed on first
request, then cached). Usage: ``python benchmarks/ingest_throughput.py [--pairs 48] [--rounds 6]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from feature_store import FeatureStore, ingest
from feature_store.decoder_views import write_decoder_views
from sarm.backbones import load_backbone
from sarm.datasets.demo import generate_demo_data
from sarm.explain.evidence import EvidenceSpec
from sarm.head import Head
from sarm.model import SARM
from sarm.saes import SAEMeta, make_topk_sae

LAYER, D_SAE, K = 15, 4096, 32


def build_sarm() -> SARM:
    backbone = load_backbone("smollm2-135m-instruct", layer=LAYER)
    torch.manual_seed(0)
    sae = make_topk_sae(backbone.d_model, D_SAE, K)
    return SARM(backbone, sae, Head(torch.randn(D_SAE) * 0.01), SAEMeta(k=K))


def highlight_latency(path: Path, sarm: SARM, n: int = 5) -> tuple[float, float]:
    """Median ms of a per-token highlight (8 features) of ``n`` features' top examples.

    First request (one forward, then cached) and the same request again (cached).
    """
    first, cached = [], []
    with FeatureStore.open(path) as store:
        seen: set[int] = set()
        for feature in store.features(order_by="frequency", limit=4 * n)["feature_id"]:
            eid = int(store.top_examples(int(feature), 1)["example_id"].iloc[0])
            if eid in seen or len(seen) == n:
                continue
            seen.add(eid)
            shown = store.example(eid).features["feature_id"].head(8).tolist()
            for sink, model in ((first, sarm), (cached, None)):
                start = time.perf_counter()
                store.token_activations(eid, shown, sarm=model)
                sink.append((time.perf_counter() - start) * 1000)
    return statistics.median(first), statistics.median(cached)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48, help="demo pairs (responses = 2 x pairs)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-size", type=int, default=64, help="responses per commit")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    sarm = build_sarm()
    groups = generate_demo_data(n_pairs=max(args.pairs * 2, 8)).train[: args.pairs]
    conversations = [g.conversation(text) for g in groups for _, _, text in g.responses()]
    batches = [
        b for _, b, _ in sarm._sorted_batches(conversations, args.batch_size, progress=False)
    ]
    n_tokens = sum(sum(b.lengths) for b in batches)
    workdir = Path(tempfile.mkdtemp(prefix="sarm-ingest-bench-"))

    def bare() -> None:
        for b in batches:
            sarm.backbone.hidden_states(b)

    def run_ingest(round_: int, evidence: EvidenceSpec | None = None) -> int:
        name = f"round{round_}{'-evidence' if evidence else ''}.duckdb"
        with FeatureStore.open(workdir / name) as store:
            report = ingest(
                store,
                sarm,
                groups,
                batch_size=args.batch_size,
                chunk_size=args.chunk_size,
                progress=False,
                evidence=evidence,
            )
            size = report.size_bytes
        if report.n_tokens != n_tokens:
            raise SystemExit(f"ingest counted {report.n_tokens} tokens, the batches {n_tokens}")
        return size

    bare()  # warm-up: first calls at each batch shape are slower
    sarm.pooled_latents(conversations, batch_size=args.batch_size)
    times: dict[str, list[float]] = {"forward": [], "ingest": [], "evidence": []}
    size = 0.0
    for r in range(args.rounds):  # alternate the order of the routes (ABBA)
        order = ("forward", "ingest", "evidence")
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            if name == "forward":
                bare()
            elif name == "ingest":
                size = run_ingest(r)
            else:
                run_ingest(r, EvidenceSpec())
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    first_ms, cached_ms = highlight_latency(workdir / "round0.duckdb", sarm)
    print(
        f"{len(conversations)} responses, {n_tokens} tokens, batch size {args.batch_size}, "
        f"chunks of {args.chunk_size}, {args.rounds} rounds"
    )
    for name, seconds in med.items():
        print(f"{name:>8}: median {seconds:.2f} s  ({n_tokens / seconds:.0f} tokens/s)")
    print(f"store: {size / 1e6:.2f} MB for {len(conversations)} examples (about 4 MB of it fixed)")
    print(
        f"highlight of a top example (8 features, median of 5): first {first_ms:.0f} ms (forward + cache), "
        f"cached {cached_ms:.1f} ms"
    )
    with FeatureStore.open(workdir / "round0-evidence.duckdb") as store:
        start = time.perf_counter()
        write_decoder_views(store, sarm)
        views = time.perf_counter() - start
    print(f"decoder views (logit lens + nearest features, once per model): {views:.1f} s")
    print(f"ingest_vs_forward={med['forward'] / med['ingest']:.3f}")
    print(f"evidence_ingest_vs_forward={med['forward'] / med['evidence']:.3f}")


if __name__ == "__main__":
    main()
