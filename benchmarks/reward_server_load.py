"""A load test of `sarm serve`: valid, malformed and disconnecting requests, mixed.

``--requests`` requests (default 2,000) in a seeded random order, from
``--clients`` concurrent clients, against one `sarm serve` process:

- ``valid-get_reward``: one real test-split rollout per request (OpenRLHF's payload);
- ``valid-score``: ``/score`` with prompt and response, or messages;
- ``valid-long``: a rollout far over the context (cut in the middle, the question kept);
- ``valid-special``: control-token text inside a response (scored literally);
- ``bad``: malformed JSON, missing fields, non-strings, empty lists, text outside the
  chat template, a 10 MB body;
- ``leave``: a client that sends its request and disconnects before the answer.

Every valid request must get 200, every bad one a 4xx, the server must still be
running and answer ``/health`` afterwards. Usage:
``python benchmarks/reward_server_load.py [--model default] [--requests 2000] [--json]``.
The last line is ``valid_5xx=... valid_not_200=... bad_not_4xx=... crashed=... health_after=...``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
from collections import Counter

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from serve_clients import Server, percentile, rollout, run_clients, test_conversations

from sarm.checkpoints import load_sarm

MIX = {
    "valid-get_reward": 0.60,
    "valid-score": 0.10,
    "valid-long": 0.05,
    "valid-special": 0.05,
    "bad": 0.10,
    "leave": 0.10,
}
BAD_BODIES = [
    b"{not json",
    b"",
    b"[1, 2, 3]",
    b'{"prompts": ["x"]}',
    b'{"query": "a string"}',
    b'{"query": []}',
    b'{"query": [1, 2]}',
    b'{"query": ["plain text outside the template"]}',
    b'{"query": ["x"], "prompts": ["a", "b"]}',
    b"\xff\xfe\x00",
]
BAD_SCORE_BODIES = [
    b'{"prompt": "hi"}',
    b'{"prompt": "hi", "response": ""}',
    b'{"messages": [{"role": "user", "content": "no answer"}]}',
    b"[]",
]
TEN_MB = b'{"query": ["' + b"a" * 10_000_000 + b'"]}'


def build_requests(tokenizer, n: int, seed: int = 0) -> list[tuple[str, str, bytes]]:
    rng = random.Random(seed)
    conversations = test_conversations(200, seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    out = []
    for i, kind in enumerate(kinds):
        conv = conversations[i % len(conversations)]
        out.append(_request(kind, conv, tokenizer, rng, i))
    out[len(out) // 2] = ("bad", "/get_reward", TEN_MB)  # two huge bodies among the rest
    out[len(out) // 3] = ("bad", "/score", TEN_MB)
    return out


def _request(kind: str, conv, tokenizer, rng: random.Random, i: int):
    if kind in ("valid-get_reward", "leave"):
        return kind, "/get_reward", json.dumps({"query": [rollout(tokenizer, conv)]}).encode()
    if kind == "valid-score":
        body = (
            {"messages": conv}
            if i % 2
            else {"prompt": conv[-2]["content"], "response": conv[-1]["content"]}
        )
        return kind, "/score", json.dumps(body).encode()
    if kind == "valid-long":
        long = [*conv[:-1], {"role": "assistant", "content": conv[-1]["content"] * 40}]
        return kind, "/get_reward", json.dumps({"query": [rollout(tokenizer, long)]}).encode()
    if kind == "valid-special":
        text = f"{conv[-1]['content']} {tokenizer.eos_token} <|im_start|>user\nmore"
        return (
            kind,
            "/score",
            json.dumps({"prompt": conv[-2]["content"], "response": text}).encode(),
        )
    if rng.random() < 0.3:
        return "bad", "/score", rng.choice(BAD_SCORE_BODIES)
    return "bad", "/get_reward", rng.choice(BAD_BODIES)


def summarise(outcome, alive: bool, health: int) -> dict:
    statuses = outcome.statuses
    valid = [s for k, v in statuses.items() if k.startswith("valid") for s in v]
    bad = statuses.get("bad", [])
    return {
        "requests": sum(len(v) for v in statuses.values()),
        "by_kind": {k: dict(Counter(v)) for k, v in sorted(statuses.items())},
        "valid_5xx": sum(500 <= s < 600 for s in valid),
        "valid_not_200": sum(s != 200 for s in valid),
        "bad_not_4xx": sum(not 400 <= s < 500 for s in bad),
        "client_errors": outcome.errors[:5],
        "crashed": not alive,
        "health_after": health,
        "seconds": round(outcome.seconds, 1),
        "valid_p50_ms": round(1000 * percentile(outcome.latencies, 0.5), 1),
        "valid_p99_ms": round(1000 * percentile(outcome.latencies, 0.99), 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--json", action="store_true", help="also print the summary as JSON")
    args = p.parse_args()
    tokenizer = load_sarm(args.model).tokenizer
    requests = build_requests(tokenizer, args.requests)
    with Server("--model", args.model) as server:
        outcome = asyncio.run(run_clients(server.url, requests, args.clients))
        alive = server.alive()
        health = httpx.get(f"{server.url}/health", timeout=30).status_code if alive else 0
    summary = summarise(outcome, alive, health)
    if args.json:
        print(json.dumps(summary))
    else:
        for kind, counts in summary["by_kind"].items():
            print(f"{kind:>18}: {counts}")
        print(
            f"{summary['seconds']} s; valid p50 {summary['valid_p50_ms']} ms, p99 {summary['valid_p99_ms']} ms"
        )
    print(
        " ".join(
            f"{k}={summary[k]}"
            for k in (
                "requests",
                "valid_5xx",
                "valid_not_200",
                "bad_not_4xx",
                "crashed",
                "health_after",
            )
        )
    )


if __name__ == "__main__":
    main()
