"""The cost of the SAE error term when scoring: the default SARM with and without its readout.

Scores the same conversations (the first test-split responses) with the
shipped default (its error readout on) and with the same backbone, SAE and the
head's feature weights but no readout, alternating rounds, and prints the
median wall-time ratio (with / without; target <= 1.05: one decode of the k
kept latents and a dot product per response, beside a 21-layer forward).
Usage: ``python benchmarks/error_readout.py [--rounds 5] [--n 32]``
"""

from __future__ import annotations

import argparse
import statistics
import time

from sarm import load_sarm
from sarm.head import Head
from sarm.model import SARM
from workflows.default_sarm.data import load_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n", type=int, default=32, help="conversations per round")
    args = parser.parse_args()
    with_error = load_sarm("default")
    if with_error.error_readout is None:
        raise SystemExit("the default has no error readout: nothing to compare")
    m = with_error.n_sae_latents
    without = SARM(
        with_error.backbone,
        with_error.sae,
        Head(with_error.head.weight[:m], with_error.head.bias),
        with_error.sae_meta,
    )
    convs = load_split("test", limit=args.n).conversations[: args.n]
    with_error.pooled_latents(convs[:2])  # warm up both paths
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(args.rounds):
        for name, model in (("with", with_error), ("without", without)):
            start = time.perf_counter()
            model.pooled_latents(convs)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"with readout {med['with']:.3f} s, without {med['without']:.3f} s per {args.n} responses"
    )
    print(f"error_readout_overhead_ratio {med['with'] / med['without']:.3f}")


if __name__ == "__main__":
    main()
