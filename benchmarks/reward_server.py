"""`sarm serve` under 16 concurrent clients vs in-process batched scoring, and batched vs not.

``--n`` real responses of the vendored test split (an equal share per source,
seeded) are sent as OpenRLHF sends them, one rollout per ``POST /get_reward``,
from ``--clients`` concurrent clients (one asyncio loop, keep-alive
connections), to three `sarm serve` processes of the same model:

- ``batched``: the defaults. Waiting requests are gathered by scoring workers: on
  CUDA one worker, up to 8 conversations per forward pass; on the CPU one worker
  per core, each with one torch thread and one conversation per forward pass
  (padded batches were slower per token there);
- ``gathered``: ``--workers 1 --batch-size 8``, padded batches of up to 8 waiting
  conversations on one worker with torch on every core;
- ``unbatched``: ``--workers 1 --batch-size 1``, one conversation at a time, as a
  server that does not gather requests scores them.

The baseline is the same responses scored in this process with
``SARM.score_batch`` (length-sorted token-budget batches, torch on every core).
Rounds alternate the routes after a warm-up of each; figures are medians over
rounds of conversations per second; latencies are pooled over the batched
server's rounds.

Usage: ``python benchmarks/reward_server.py [--model default] [--n 64] [--clients 16]
[--rounds 3]``. The last line is
``server_vs_inprocess=... p50_ms=... p99_ms=... batched_vs_unbatched=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from serve_clients import (
    Server,
    percentile,
    reward_request,
    rollout,
    run_clients,
    test_conversations,
)

from sarm import load_sarm


def served_rate(url: str, requests, clients: int) -> tuple[float, list[float]]:
    outcome = asyncio.run(run_clients(url, requests, clients))
    failed = [s for s in outcome.statuses["valid-get_reward"] if s != 200]
    if failed or outcome.errors:
        raise SystemExit(f"the server refused valid requests: {failed[:5]} {outcome.errors[:3]}")
    return len(requests) / outcome.seconds, outcome.latencies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--n", type=int, default=64, help="responses per round (default 64)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    model = load_sarm(args.model)
    conversations = test_conversations(args.n)
    requests = [reward_request(rollout(model.tokenizer, c)) for c in conversations]
    tokens = sum(model.prepare(conversations)[i].n_tokens for i in range(len(conversations)))
    print(f"{args.n} test-split responses, {tokens:,} tokens; {args.clients} clients")
    servers = {
        "batched": ("--model", args.model),
        "gathered": ("--model", args.model, "--workers", "1", "--batch-size", "8"),
        "unbatched": ("--model", args.model, "--workers", "1", "--batch-size", "1"),
    }
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(Server(*flags)).url for name, flags in servers.items()}
        model.score_batch(conversations[:8])  # warm-up
        for url in urls.values():
            served_rate(url, requests[:16], args.clients)
        rates: dict[str, list[float]] = {"in-process": [], **{name: [] for name in urls}}
        latencies: list[float] = []
        for r in range(args.rounds):
            started = time.perf_counter()
            model.score_batch(conversations)
            rates["in-process"].append(args.n / (time.perf_counter() - started))
            for name, url in urls.items():
                rate, lat = served_rate(url, requests, args.clients)
                rates[name].append(rate)
                latencies += lat if name == "batched" else []
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}/s" for k, v in rates.items()))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        "conversations/s (median): "
        + ", ".join(f"{k} {v:.2f}" for k, v in med.items())
        + f"; padded batches alone (gathered vs unbatched) {med['gathered'] / med['unbatched']:.3f}"
    )
    print(
        f"server_vs_inprocess={med['batched'] / med['in-process']:.3f} "
        f"p50_ms={1000 * percentile(latencies, 0.5):.1f} "
        f"p99_ms={1000 * percentile(latencies, 0.99):.1f} "
        f"batched_vs_unbatched={med['batched'] / med['unbatched']:.3f}"
    )


if __name__ == "__main__":
    main()
