"""The LLM explainer against a local llama.cpp server: seconds per prompt and a worked example.

Starts llama-cpp-python's OpenAI-compatible server on the embedded
SmolLM2-135M-Instruct GGUF, runs the shipped default SARM over real xstest
responses (``--n`` refusals, matched by phrase, and ``--n`` other responses),
picks the ``--features`` features with a non-zero head weight, enough active
and inactive responses to explain and score, whose peak activation separates
refusals from the rest most, and for each builds windows
of +-``--half-width`` response tokens around the peak, asks the server for an
explanation (top ``--explain`` windows) and scores it by yes / no detection on
held-out windows (``--held-out`` active, as many inactive). Every request is
timed (no reply cache, one at a time).

Prints the worked examples, then seconds per explanation prompt and per yes / no
check (medians); the last line is the ratio of the two. Needs llama-cpp-python
(``pip install .[llm-test]``). Usage:
``python benchmarks/llm_explainer.py [--n 20] [--features 3]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np

from sarm.checkpoints import load_sarm
from sarm.explain.llama_server import LlamaServer
from sarm.explain.llm import LLMConfig, LLMExplainer
from sarm.explain.prompts import window_text
from sarm.explain.types import EvidenceWindow

XSTEST = Path(__file__).parents[1] / "data" / "prefs" / "splits" / "xstest.jsonl.gz"
REFUSAL = re.compile(r"I'm sorry|I cannot|I can't|I apologize")


def sample(n: int) -> list[tuple[str, str, bool]]:
    """``n`` refusing and ``n`` other distinct (prompt, response, refuses) from xstest, in order."""
    with gzip.open(XSTEST, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    pairs = list(dict.fromkeys((r["prompt"], r[s]) for r in rows for s in ("chosen", "rejected")))
    refusing = [(p, t, True) for p, t in pairs if REFUSAL.search(t)][:n]
    other = [(p, t, False) for p, t in pairs if not REFUSAL.search(t)][:n]
    return refusing + other


def response_activations(sarm, prompt: str, response: str):
    """Response tokens (after the last ``<|im_start|>assistant\\n``) and their ``z_t`` as dense rows."""
    lat = sarm.token_latents((prompt, response))
    turn = max(i for i, t in enumerate(lat.tokens) if t == "<|im_start|>")
    start = next(i for i in range(turn, len(lat.tokens)) if "\n" in lat.tokens[i]) + 1
    dense = np.zeros((len(lat.tokens), sarm.head.size), dtype=np.float32)
    np.put_along_axis(dense, lat.indices.numpy(), lat.values.numpy(), axis=1)
    return lat.tokens[start:], dense[start:]


def window(example_id: int, tokens, acts: np.ndarray, half_width: int) -> EvidenceWindow:
    peak = int(np.argmax(acts)) if acts.max() > 0 else len(tokens) - 1
    lo, hi = max(peak - half_width, 0), min(peak + half_width + 1, len(tokens))
    return EvidenceWindow(
        example_id,
        tuple(tokens[lo:hi]),
        tuple(float(a) for a in acts[lo:hi]),
        active=bool(acts.max() > 0),
        peak=peak - lo if acts.max() > 0 else None,
        scored=len(tokens) - 1 - lo if hi == len(tokens) else None,
    )


def timed(call, *args):
    start = time.perf_counter()
    result = call(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--explain", type=int, default=6)
    parser.add_argument("--held-out", type=int, default=4)
    parser.add_argument("--half-width", type=int, default=10)
    args = parser.parse_args()

    sarm = load_sarm("default")
    data = sample(args.n)
    rows = [response_activations(sarm, p, t) for p, t, _ in data]
    peaks = np.stack([acts.max(axis=0) for _, acts in rows])  # [responses, d_sae]
    refuses = np.array([r for _, _, r in data])
    weights = np.asarray(sarm.head.weights, dtype=np.float64)
    separation = peaks[refuses].mean(axis=0) - peaks[~refuses].mean(axis=0)
    n_active = (peaks > 0).sum(axis=0)
    scorable = (n_active >= args.explain + args.held_out) & (len(rows) - n_active >= args.held_out)
    separation[(weights == 0) | ~scorable] = -np.inf
    features = [int(f) for f in np.argsort(-separation)[: args.features]]

    explain_s, check_s = [], []
    with LlamaServer() as server:
        config = LLMConfig(base_url=server.base_url, model=server.model, concurrency=1)
        explainer = LLMExplainer(config)
        for feature in features:
            windows = [window(i, tok, acts[:, feature], args.half_width)
                       for i, (tok, acts) in enumerate(rows)]  # fmt: skip
            active = sorted((w for w in windows if w.active), key=lambda w: -max(w.activations))
            inactive = [w for w in windows if not w.active]
            shown = active[: args.explain]
            held_out = active[args.explain : args.explain + args.held_out]
            held_out += inactive[: len(held_out)]
            explanation, seconds = timed(explainer.explain, feature, shown, [])
            explain_s.append(seconds)
            predicted = []
            for w in held_out:
                answer, seconds = timed(explainer.detect, explanation.text, [w])
                predicted += answer
                check_s.append(seconds)
            scored = explainer.score(explanation, held_out) if held_out else explanation
            refusing = sum(refuses[w.example_id] for w in active)
            print(f"\n== feature {feature}: head weight {weights[feature]:+.3f}, fires in "
                  f"{len(active)}/{len(windows)} responses ({refusing} of them refusals)")  # fmt: skip
            for w in shown:
                print(f"   [{max(w.activations):.2f}] {window_text(w, marked=True)}")
            print(f"   reply: {explanation.details['raw_reply']!r}")
            print(f"   explanation: {scored.text!r}  monosemanticity: {scored.monosemanticity}")
            print(f"   detection on {len(held_out)} held-out windows: predicted {predicted}, "
                  f"balanced accuracy {scored.score}")  # fmt: skip

    print(f"\nexplanation prompt: median {statistics.median(explain_s):.2f} s "
          f"(n={len(explain_s)}, range {min(explain_s):.2f}-{max(explain_s):.2f})")  # fmt: skip
    print(f"yes/no check: median {statistics.median(check_s):.3f} s "
          f"(n={len(check_s)}, range {min(check_s):.3f}-{max(check_s):.3f})")  # fmt: skip
    ratio = statistics.median(explain_s) / statistics.median(check_s)
    print(f"explain_prompt_vs_yes_no_check: {ratio:.1f}x")


if __name__ == "__main__":
    main()
