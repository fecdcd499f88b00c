"""Token-budget batching vs one-at-a-time scoring on real responses, embedded backbone.

A fixed, seeded, source-stratified sample of real responses (``--n`` of them,
an equal share from every ``*.jsonl.gz`` file of the shared preference data,
chosen or rejected at random) is scored with ``SARM.score_batch`` one
conversation per forward pass and in length-sorted batches cut by a padded-token
budget. Rounds alternate the two routes (ABBA) after a warm-up of both;
``batched_vs_single`` is the ratio of median tokens/s (real, unpadded tokens).
HH-RLHF transcript prompts are used as one user message, as written.

The SAE has the demo's size (576 -> 4096, k = 32) with random weights. The data
directory is ``../shared/data/prefs`` relative to the repository, or
``$SARM_SHARED_DATA/prefs``. Usage:
``python benchmarks/batch_throughput.py [--n 200] [--rounds 3] [--max-batch-tokens N]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

from sarm.backbones import load_backbone
from sarm.head import Head
from sarm.model import SARM
from sarm.saes import SAEMeta, make_topk_sae

LAYER, D_SAE, K = 15, 4096, 32
SEED = 0
SHARED_DATA = Path(
    os.environ.get("SARM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def build_sarm() -> SARM:
    backbone = load_backbone("smollm2-135m-instruct", layer=LAYER)
    torch.manual_seed(SEED)
    sae = make_topk_sae(backbone.d_model, D_SAE, K)
    return SARM(backbone, sae, Head(torch.randn(D_SAE) * 0.01), SAEMeta(k=K))


def sample_responses(prefs: Path, n: int, seed: int = SEED) -> list[tuple[str, str]]:
    """``n`` (prompt, response) pairs, an equal share from each source file, seeded."""
    files = sorted(prefs.glob("*.jsonl.gz"))
    if not files:
        sys.exit(
            f"no *.jsonl.gz preference files in {prefs}; set SARM_SHARED_DATA to the "
            "directory that holds prefs/ (see that directory's README.md)"
        )
    rng = random.Random(seed)
    share, extra = divmod(n, len(files))
    out: list[tuple[str, str]] = []
    for i, path in enumerate(files):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        rows = [r for r in rows if all(r[f].strip() for f in ("prompt", "chosen", "rejected"))]
        for row in rng.sample(rows, min(len(rows), share + (i < extra))):
            out.append((row["prompt"], row[rng.choice(("chosen", "rejected"))]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="responses in the sample")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each route")
    parser.add_argument("--batch-size", type=int, default=64, help="row cap per batch")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: the model's")
    args = parser.parse_args()

    items = sample_responses(SHARED_DATA / "prefs", args.n)
    sarm = build_sarm()
    budget = args.max_batch_tokens or sarm.max_batch_tokens

    def single() -> list:
        return sarm.score_batch(items, batch_size=1)

    def batched() -> list:
        return sarm.score_batch(items, batch_size=args.batch_size, max_batch_tokens=budget)

    routes = {"single": single, "batched": batched}
    warm = {name: fn() for name, fn in routes.items()}
    n_tokens = sum(s.n_tokens for s in warm["single"])
    worst = max(abs(a.reward - b.reward) for a, b in zip(*warm.values(), strict=True))
    times: dict[str, list[float]] = {name: [] for name in routes}
    for r in range(args.rounds):
        order = list(routes) if r % 2 == 0 else list(reversed(routes))
        for name in order:
            start = time.perf_counter()
            routes[name]()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"{len(items)} responses, {n_tokens} tokens, {torch.get_num_threads()} threads, "
        f"budget {budget} padded tokens, <= {args.batch_size} rows; "
        f"largest |reward difference| batched vs single: {worst:.2e}"
    )
    for name in routes:
        print(f"{name:>8}: median {med[name]:.2f} s  ({n_tokens / med[name]:.0f} tokens/s)")
    print(
        f"batched_vs_single={med['single'] / med['batched']:.2f} "
        f"tokens_per_s={n_tokens / med['batched']:.0f}"
    )


if __name__ == "__main__":
    main()
