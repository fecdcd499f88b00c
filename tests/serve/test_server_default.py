"""The default SARM served over HTTP: rewards equal ``load_sarm("default").score`` on real pairs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serving import running

from sarm import load_sarm
from sarm.data import load_preferences
from sarm.types import responses_of
from workflows.serve.app import HEAD_HEADER, create_app

TEST_SPLIT = Path(__file__).parents[2] / "data" / "prefs" / "splits" / "test.jsonl.gz"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return load_sarm("default")


@pytest.fixture(scope="module")
def conversations():
    """Both responses of 6 real test-split pairs, one per source where there are enough."""
    groups = load_preferences(TEST_SPLIT, skip_malformed=True).groups
    picked, seen = [], set()
    for g in groups:
        if g.subset not in seen and len(g.chosen) == len(g.rejected) == 1:
            picked.append(g)
            seen.add(g.subset)
    return [r.conversation() for r in responses_of(picked[:6])]


def rollout(model, conv) -> str:
    tok = model.tokenizer
    prompt = tok.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
    return prompt + conv[-1]["content"] + tok.eos_token


def test_served_rewards_equal_the_library_on_real_pairs(model, conversations):
    expected = [model.score(messages=c).reward for c in conversations]
    queries = [rollout(model, c) for c in conversations]
    with running(create_app(model)) as url:
        batched = httpx.post(f"{url}/get_reward", json={"query": queries}, timeout=300)
        assert batched.headers[HEAD_HEADER] == model.head.hash()
        assert batched.json()["rewards"] == pytest.approx(expected, abs=1e-4)
        with ThreadPoolExecutor(4) as pool:
            singles = list(
                pool.map(
                    lambda q: httpx.post(f"{url}/get_reward", json={"query": [q]}, timeout=300),
                    queries,
                )
            )
        assert [r.json()["rewards"][0] for r in singles] == pytest.approx(expected, abs=1e-4)
        scored = httpx.post(
            f"{url}/score", json=[{"messages": c} for c in conversations], timeout=300
        )
        assert [s["reward"] for s in scored.json()] == pytest.approx(expected, abs=1e-4)
        one = httpx.post(f"{url}/score", json={"messages": conversations[0]}, timeout=300)
        assert one.json()["reward"] == pytest.approx(expected[0], abs=1e-4)
