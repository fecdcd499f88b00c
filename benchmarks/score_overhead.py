"""SARM scoring overhead on the embedded backbone, as ratios measured in one process.

1. ``overhead_ratio``: ``SARM.score_batch`` wall time / a bare truncated-backbone
   forward over the very same padded batches (target <= 1.15). The SARM side
   includes chat rendering, tokenisation, standardisation, the SAE, the head and
   building every ``Score``.
2. ``naive_speedup``: the route a user would take without this library (load
   the causal LM with transformers, run a full-depth forward with
   ``output_hidden_states=True``, take layer ``L`` and SAE-encode it) / SARM's
   time (target >= 1.7). A third route, the full-depth decoder stack alone (no
   LM head), is printed too, so the share of the speed-up owed to skipping the
   LM head is visible.

The SAE has the demo's size (576 -> 4096, k = 32) with random weights: timing
does not depend on the values. Rounds alternate the three routes and the
median of each is reported. Usage: ``python benchmarks/score_overhead.py [--rounds 5]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers import AutoModelForCausalLM

from sarm.backbones import embedded_gguf_path, load_backbone
from sarm.head import Head
from sarm.model import SARM
from sarm.saes import SAEMeta, make_topk_sae, sarm_encode, standardize

LAYER, D_SAE, K = 15, 4096, 32
TOPICS = [
    "boiling an egg",
    "the French revolution",
    "binary search",
    "photosynthesis",
    "tax returns",
    "learning the violin",
    "a broken bicycle chain",
    "prime numbers",
]


def conversations(n: int) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        detail = " It depends on the details, so here is a longer explanation." * (i % 4)
        out.append(
            (f"Can you explain {topic} briefly?", f"Sure. Here is {topic} in short.{detail}")
        )
    return out


def build_sarm() -> SARM:
    backbone = load_backbone("smollm2-135m-instruct", layer=LAYER)
    torch.manual_seed(0)
    sae = make_topk_sae(backbone.d_model, D_SAE, K)
    head = Head(torch.randn(D_SAE) * 0.01)
    return SARM(backbone, sae, head, SAEMeta(k=K))


def time_it(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    sarm = build_sarm()
    gguf = embedded_gguf_path()  # the naive route: the whole causal LM, as a user loads it
    full = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name).eval()
    items = conversations(args.pairs)
    batches = [
        b
        for _, b in sarm._sorted_batches(
            [
                [{"role": "user", "content": p}, {"role": "assistant", "content": r}]
                for p, r in items
            ],
            args.batch_size,
            progress=False,
        )
    ]
    n_tokens = sum(sum(b.lengths) for b in batches)

    def bare() -> None:
        for b in batches:
            sarm.backbone.hidden_states(b)

    def ours() -> None:
        sarm.score_batch(items, batch_size=args.batch_size)

    @torch.inference_mode()
    def naive_route(model) -> None:
        for b in batches:
            out = model(
                input_ids=b.input_ids,
                attention_mask=b.attention_mask,
                output_hidden_states=True,
                use_cache=False,
            )
            h = out.hidden_states[LAYER][torch.arange(len(b)), b.last_index]
            sarm_encode(sarm.sae, standardize(h), K)

    def naive() -> None:
        naive_route(full)

    def stack() -> None:
        naive_route(full.model)

    routes = {"bare": bare, "sarm": ours, "naive": naive, "stack": stack}
    for fn in routes.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(args.rounds):
        for name, fn in routes.items():
            times[name].append(time_it(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"tokens per round: {n_tokens} in {len(batches)} batches of <= {args.batch_size}")
    for name in routes:
        print(f"{name:>6}: median {med[name]:.3f} s  ({n_tokens / med[name]:.0f} tokens/s)")
    print(f"full decoder stack without the LM head: {med['stack'] / med['sarm']:.2f}x SARM's time")
    print(
        f"overhead_ratio={med['sarm'] / med['bare']:.3f} naive_speedup={med['naive'] / med['sarm']:.2f}"
    )


if __name__ == "__main__":
    main()
