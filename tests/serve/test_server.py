"""The reward server over HTTP (a real uvicorn on localhost) against the library's own scores."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers import make_released_checkpoint
from prometheus_client.parser import text_string_to_metric_families
from serving import running

from sarm import load_sarm, score_top
from workflows.serve.app import HEAD_HEADER, SAE_HEADER, ServerConfig, create_app

CONVERSATIONS = [
    [
        {"role": "user", "content": "How do I boil an egg?"},
        {"role": "assistant", "content": "8 min."},
    ],
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris, the largest city of France."},
    ],
    [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road? To get across."},
    ],
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = make_released_checkpoint(tmp_path_factory.mktemp("serve") / "tiny", template="chatml")
    return load_sarm(path, max_length=96)


@pytest.fixture(scope="module")
def explanations(model):
    return {f: {"text": f"feature {f} text", "source": "stats", "score": 0.5} for f in range(5)}


@pytest.fixture(scope="module")
def url(model, explanations):
    app = create_app(model, explanations, ServerConfig(model_name="tiny", max_body_bytes=100_000))
    with running(app) as base:
        yield base


def rollout(model, conv) -> str:
    """OpenRLHF's query: the prompt with its generation prompt, the response, eos."""
    tok = model.tokenizer
    prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    return prompt + conv[-1]["content"] + tok.eos_token


def library(model, conv) -> float:
    return model.score(messages=conv).reward


def test_get_reward_equals_the_library_singly_and_batched(model, url):
    queries = [rollout(model, c) for c in CONVERSATIONS]
    expected = [library(model, c) for c in CONVERSATIONS]
    batched = httpx.post(f"{url}/get_reward", json={"query": queries, "prompts": queries})
    assert batched.status_code == 200
    body = batched.json()
    assert body["rewards"] == pytest.approx(expected, abs=1e-5)
    assert body["scores"] == body["rewards"] and body["extra_logs"] == {}
    for query, want in zip(queries, expected, strict=True):
        single = httpx.post(f"{url}/get_reward", json={"query": [query]}).json()["rewards"]
        assert single == pytest.approx([want], abs=1e-5)


def test_score_returns_the_exact_decomposition_with_explanations(model, url, explanations):
    conv = CONVERSATIONS[1]
    got = httpx.post(f"{url}/score?top=3", json={"messages": conv}).json()
    want = model.score(messages=conv)
    assert got["reward"] == pytest.approx(want.reward, abs=1e-5)
    assert got["bias"] == pytest.approx(want.bias)
    split = score_top(want, 3)
    assert [t["feature"] for t in got["top"]] == [f for f, _ in split.top]
    total = sum(t["contribution"] for t in got["top"]) + got["other_features"]["contribution"]
    assert total + got["bias"] == pytest.approx(got["reward"], abs=1e-5)
    for entry in got["top"]:
        assert entry["contribution"] == pytest.approx(want.contributions[entry["feature"]])
        shown = explanations.get(entry["feature"])
        assert entry["explanation"] == (shown["text"] if shown else None)
    pair = {"prompt": "How do I boil an egg?", "response": "8 min."}
    many = httpx.post(f"{url}/score", json=[pair, {"messages": conv}]).json()
    assert [m["reward"] for m in many] == pytest.approx(
        [library(model, CONVERSATIONS[0]), want.reward], abs=1e-5
    )


def test_special_tokens_inside_text_are_scored_literally(model, url):
    response = "I will print <|im_end|> and <|im_start|>user as text."
    got = httpx.post(f"{url}/score", json={"prompt": "Show markers", "response": response})
    want = model.score("Show markers", response)
    assert got.json()["reward"] == pytest.approx(want.reward, abs=1e-5)
    assert got.json()["n_tokens"] == want.n_tokens


def test_over_long_text_keeps_the_question(model, url):
    prompt, response = "What is the answer?", "word " * 400
    got = httpx.post(f"{url}/score", json={"prompt": prompt, "response": response}).json()
    want = model.score(prompt, response)
    assert got["truncated"] and got["truncated_part"] == "response"
    assert got["n_tokens"] == want.n_tokens <= 96
    assert got["reward"] == pytest.approx(want.reward, abs=1e-5)
    query = rollout(
        model, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    )
    reward = httpx.post(f"{url}/get_reward", json={"query": [query]}).json()["rewards"][0]
    assert reward == pytest.approx(want.reward, abs=1e-5)


BAD = [
    ("/get_reward", b"{not json", 400, "body"),
    ("/get_reward", b"", 400, "body"),
    ("/get_reward", b"\xff\xfe", 400, "body"),
    ("/get_reward", b"[1, 2]", 422, "body"),
    ("/get_reward", b'{"prompts": []}', 422, "query"),
    ("/get_reward", b'{"query": "text"}', 422, "query"),
    ("/get_reward", b'{"query": []}', 422, "query"),
    ("/get_reward", b'{"query": ["ok", 3]}', 422, "query[1]"),
    ("/get_reward", b'{"query": ["plain text, no template"]}', 422, "query[0]"),
    ("/get_reward", b'{"query": ["x"], "prompts": ["a", "b"]}', 422, "prompts"),
    ("/get_reward", b'{"query": [NaN]}', 400, "body"),
    ("/score", b'{"prompt": "hi"}', 422, "response"),
    ("/score", b'{"prompt": "hi", "response": "  "}', 422, "response"),
    ("/score", b'{"prompt": 1, "response": "x"}', 422, "prompt"),
    ("/score", b"[]", 422, "body"),
    ("/score", b'[{"prompt": "a", "response": "b"}, 7]', 422, "body[1]"),
    ("/score", b'{"messages": [{"role": "user", "content": "hi"}]}', 422, "messages"),
    ("/score", b'{"messages": "hi"}', 422, "messages"),
    ("/score", b'{"messages": [], "prompt": "a"}', 422, "messages"),
    ("/score?top=-1", b'{"prompt": "a", "response": "b"}', 422, "top"),
    ("/score?top=x", b'{"prompt": "a", "response": "b"}', 422, "top"),
]


@pytest.mark.parametrize(("path", "body", "status", "field"), BAD)
def test_bad_input_is_a_4xx_naming_the_field(url, path, body, status, field):
    got = httpx.post(f"{url}{path}", content=body, headers={"content-type": "application/json"})
    assert got.status_code == status, got.text
    assert got.json()["field"] == field and got.json()["error"]
    assert "\n" not in got.text
    assert httpx.get(f"{url}/health").status_code == 200


def test_large_bodies_are_refused_before_they_are_read(url):
    big = b'{"query": ["' + b"a" * 200_000 + b'"]}'
    got = httpx.post(f"{url}/get_reward", content=big)
    assert got.status_code == 413 and got.json()["field"] == "body"

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(50):
            yield b"a" * 10_000

    streamed = httpx.post(f"{url}/score", content=chunks())
    assert streamed.status_code == 413


def test_every_response_carries_the_head_hash(model, url):
    for response in (
        httpx.get(f"{url}/health"),
        httpx.get(f"{url}/metrics"),
        httpx.get(f"{url}/nowhere"),
        httpx.post(f"{url}/score", content=b"{"),
        httpx.get(f"{url}/get_reward"),
    ):
        assert response.headers[HEAD_HEADER] == model.head.hash()
        assert response.headers[SAE_HEADER] == model.sae_hash()
    health = httpx.get(f"{url}/health").json()
    assert health["head_hash"] == model.head.hash() and health["layer"] == str(model.layer)
    assert health["model"] == "tiny" and health["explained_features"] == 5


def metric(url: str, name: str, **labels) -> float:
    text = httpx.get(f"{url}/metrics").text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class Slowed:
    """The model, with each forward pass taking ``delay`` seconds more (requests pile up)."""

    def __init__(self, model, delay: float):
        self.model, self.delay = model, delay

    def __getattr__(self, name):
        return getattr(self.model, name)

    def score_prepared(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.model.score_prepared(*args, **kwargs)


def test_concurrent_singles_are_batched(model):
    app = create_app(Slowed(model, 0.2), {}, ServerConfig(max_batch_rows=16))
    queries = [rollout(model, CONVERSATIONS[i % 3]) for i in range(16)]
    expected = [library(model, CONVERSATIONS[i % 3]) for i in range(16)]
    with running(app) as base, ThreadPoolExecutor(16) as pool:
        replies = list(
            pool.map(lambda q: httpx.post(f"{base}/get_reward", json={"query": [q]}), queries)
        )
        got = [r.json()["rewards"][0] for r in replies]
        assert got == pytest.approx(expected, abs=1e-5)
        forwards = metric(base, "sarm_batch_rows_count")
        assert metric(base, "sarm_batch_rows_sum") == 16
        assert forwards < 16, "16 concurrent requests were scored one at a time"
        assert metric(base, "sarm_requests_total", endpoint="/get_reward", status="200") == 16


def send_and_leave(base: str, body: bytes) -> None:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        head = f"POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)


def test_a_client_that_leaves_costs_the_others_nothing(model):
    app = create_app(Slowed(model, 0.3), {}, ServerConfig(max_batch_rows=1))
    query = rollout(model, CONVERSATIONS[0])
    body = json.dumps({"query": [query]}).encode()
    with running(app) as base:
        blocker = threading.Thread(
            target=httpx.post, args=(f"{base}/get_reward",), kwargs={"json": {"query": [query]}}
        )
        blocker.start()
        time.sleep(0.05)
        for _ in range(5):
            send_and_leave(base, body)  # queued behind the blocker, then gone
        time.sleep(0.1)
        kept = httpx.post(f"{base}/get_reward", json={"query": [query]}, timeout=30)
        blocker.join()
        assert kept.status_code == 200
        assert kept.json()["rewards"][0] == pytest.approx(
            library(model, CONVERSATIONS[0]), abs=1e-5
        )
        assert metric(base, "sarm_client_disconnects_total") == 5
        # none of the five was scored: each was dropped while queued or before it was queued
        assert metric(base, "sarm_scored_conversations_total") == 2
        assert metric(base, "sarm_skipped_conversations_total") <= 5
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
