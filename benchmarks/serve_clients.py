"""Shared by the reward-server benchmarks: real test-split rollouts, a `sarm serve`
process, and concurrent HTTP clients with per-request latencies."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TEST_SPLIT = ROOT / "data" / "prefs" / "splits" / "test.jsonl.gz"


def test_conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """``n`` responses of the vendored test split as conversations, an equal share per
    source (chosen or rejected at random), seeded."""
    from sarm.data import load_preferences
    from sarm.types import responses_of

    groups = load_preferences(TEST_SPLIT, skip_malformed=True).groups
    by_source: dict[str, list] = defaultdict(list)
    for response in responses_of(groups):
        by_source[str(groups[response.group_index].subset)].append(response)
    rng = random.Random(seed)
    sources = sorted(by_source)
    picked = []
    for i in range(n):
        pool = by_source[sources[i % len(sources)]]
        picked.append(pool[rng.randrange(len(pool))].conversation())
    return picked


def rollout(tokenizer, conversation: list[dict]) -> str:
    """The conversation as OpenRLHF sends it: generation prompt, response, eos."""
    prompt = tokenizer.apply_chat_template(
        conversation[:-1], tokenize=False, add_generation_prompt=True
    )
    return prompt + conversation[-1]["content"] + tokenizer.eos_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``sarm serve ARGS`` as a child process on a free port."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "workflows.cli", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.DEVNULL)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"sarm serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.3)
        sys.exit("sarm serve did not start within 300 s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@dataclass
class Outcome:
    """What the clients saw: statuses per kind of request, latencies of the valid ones."""

    statuses: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


async def run_clients(url: str, requests: list[tuple[str, str, bytes]], clients: int) -> Outcome:
    """Send ``(kind, path, body)`` requests from ``clients`` concurrent clients, in order.

    ``kind`` ``"leave"`` opens a raw connection, sends the request and closes it
    without reading the answer (a client that disconnects mid-batch).
    """
    outcome = Outcome()
    queue: asyncio.Queue = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                kind, path, body = queue.get_nowait()
                await _send(client, url, kind, path, body, outcome)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        outcome.seconds = time.perf_counter() - started
    return outcome


async def _send(client, url, kind, path, body, outcome: Outcome) -> None:
    if kind == "leave":
        await _send_and_leave(url, path, body)
        outcome.statuses[kind].append(0)
        return
    started = time.perf_counter()
    try:
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as exc:
        outcome.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
        outcome.statuses[kind].append(-1)
        return
    outcome.statuses[kind].append(response.status_code)
    if kind.startswith("valid") and response.status_code == 200:
        outcome.latencies.append(time.perf_counter() - started)


async def _send_and_leave(url: str, path: str, body: bytes) -> None:
    host, port = url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()


def reward_request(query: str) -> tuple[str, str, bytes]:
    return "valid-get_reward", "/get_reward", json.dumps({"query": [query]}).encode()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
