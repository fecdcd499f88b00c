"""The LLM explainer end to end against a real OpenAI-compatible server.

llama-cpp-python's server runs the embedded SmolLM2-135M-Instruct GGUF as a
subprocess; the explainer explains two features and scores the explanations by
detection on held-out windows, resumes from its reply cache after a run killed
with SIGKILL, asks nothing when everything is cached, retries a timed-out
request and names a killed server. The windows are real responses of
the vendored preference data (xstest split); the two "features" fire on a rule
(refusal phrases; digits), so which windows are active is known independently.

A 135M model writes poor explanations: this checks the plumbing and the
scoring, not the quality. Skips when llama-cpp-python is not installed, unless
SARM_REQUIRE_LLM_SERVER is set (CI sets it), where it fails instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sarm.explain import prompts
from sarm.explain.llama_server import INSTALL_HINT, LlamaServer, llama_cpp_installed
from sarm.explain.llm import ExplainerError, ExplainerUnreachable, LLMConfig, LLMExplainer
from sarm.explain.types import EvidenceWindow

pytestmark = pytest.mark.slow

XSTEST = Path(__file__).parents[2] / "data" / "prefs" / "splits" / "xstest.jsonl.gz"
RULES = {
    101: re.compile(r"I'm sorry|I cannot|I can't|I apologize"),
    202: re.compile(r"\d"),
}
HALF_WIDTH = 10


def _require_llama_cpp() -> None:
    if llama_cpp_installed():
        return
    if os.environ.get("SARM_REQUIRE_LLM_SERVER"):
        pytest.fail(
            f"SARM_REQUIRE_LLM_SERVER is set but llama-cpp-python is missing: {INSTALL_HINT}"
        )
    pytest.skip(f"llama-cpp-python is not installed ({INSTALL_HINT})")


def _responses() -> list[str]:
    with gzip.open(XSTEST, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    # distinct texts (some pairs hold the same response twice), in file order
    return list(dict.fromkeys(row[side] for row in rows for side in ("chosen", "rejected")))


def _window(example_id: int, text: str, rule: re.Pattern) -> EvidenceWindow:
    """Word tokens around the rule's first match; activation 2.0 on its first token, 1.0 after."""
    spans = [(m.start(), m.end()) for m in re.finditer(r"\s*\S+", text)]
    match = rule.search(text)
    if match is None:
        chosen = spans[: 2 * HALF_WIDTH]
        return EvidenceWindow(example_id, tuple(text[a:b] for a, b in chosen),
                              (0.0,) * len(chosen), active=False)  # fmt: skip
    hit = [i for i, (a, b) in enumerate(spans) if a < match.end() and b > match.start()]
    lo = max(hit[0] - HALF_WIDTH, 0)
    chosen = spans[lo : hit[0] + HALF_WIDTH]
    acts = tuple(
        (2.0 if i == hit[0] else 1.0) if i in hit else 0.0 for i in range(lo, lo + len(chosen))
    )
    return EvidenceWindow(example_id, tuple(text[a:b] for a, b in chosen), acts, True,
                          peak=hit[0] - lo)  # fmt: skip


def _evidence(feature: int, n_explain: int = 4, n_held_out: int = 2):
    """Windows to explain from (active) and held-out windows to score on (balanced)."""
    windows = [_window(i, text, RULES[feature]) for i, text in enumerate(_responses())]
    active = [w for w in windows if w.active]
    inactive = [w for w in windows if not w.active]
    explain = active[:n_explain]
    held_out = active[n_explain : n_explain + n_held_out] + inactive[:n_held_out]
    return explain, held_out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _require_llama_cpp()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with LlamaServer(log_path=log, n_ctx=2048) as running:
        yield running


# explains both features one at a time and kills itself when the first has finished
KILLED_RUN = """
import os, signal, sys
from test_llm_server import RULES, _evidence
from sarm.explain.llm import LLMConfig, LLMExplainer

url, model, cache = sys.argv[1:4]
config = LLMConfig(base_url=url, model=model, cache_path=cache, concurrency=1, timeout_s=300)
explainer = LLMExplainer(config)
requests = [(f, _evidence(f)[0], [(" sorry", 3, 0)] if f == 101 else []) for f in RULES]

def progress(done, total):
    if done == 1:
        os.kill(os.getpid(), signal.SIGKILL)

explainer.explain_many(requests, progress=progress)
"""


def _config(server, cache: Path | None, **overrides) -> LLMConfig:
    settings = {"timeout_s": 300.0, "concurrency": 2, "backoff_s": 0.1, **overrides}
    return LLMConfig(base_url=server.base_url, model=server.model, cache_path=cache, **settings)


def test_explain_and_score_against_a_real_server_then_resume_from_the_cache(server, tmp_path):
    cache = tmp_path / "replies.sqlite"
    evidence = {feature: _evidence(feature) for feature in RULES}
    requests = [(f, explain, [(" sorry", 3, 0)] if f == 101 else []) for f, (explain, _) in
                evidence.items()]  # fmt: skip

    # a first run (another process) is killed with SIGKILL once its first reply is in
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, server.base_url, server.model, str(cache)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    # the rerun asks only for the feature the killed run did not finish
    seen: list[tuple[int, int]] = []
    second = LLMExplainer(_config(server, cache))
    explanations = second.explain_many(requests, progress=lambda d, t: seen.append((d, t)))
    assert second.requests_sent == 2 and second.cache_hits == 1
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)

    for explanation, (feature, windows, contrastive) in zip(explanations, requests, strict=True):
        messages = prompts.explain_messages(feature, windows, contrastive)
        prompt = json.dumps({"messages": messages}, sort_keys=True, separators=(",", ":"),
                            ensure_ascii=False)  # fmt: skip
        assert explanation.feature_id == feature
        assert explanation.source == "llm:smollm2"
        assert explanation.version == prompts.PROMPT_VERSION
        assert explanation.evidence_hash == hashlib.sha256(prompt.encode()).hexdigest()
        assert explanation.details["raw_reply"].strip(), "the server returned an empty reply"
        assert explanation.text.strip(), explanation.details
        assert explanation.monosemanticity in (None, 1, 2, 3, 4, 5)

    held_out = [evidence[e.feature_id][1] for e in explanations]
    scored = second.score_many(list(zip(explanations, held_out, strict=True)))
    for explanation, windows in zip(scored, held_out, strict=True):
        detection = explanation.details["detection"]
        predicted, active = detection["predicted"], detection["active"]
        assert len(predicted) == len(windows) == 4 and active == [True, True, False, False]
        assert all(isinstance(p, bool) for p in predicted)
        hits, rejections = sum(predicted[:2]), sum(not p for p in predicted[2:])
        assert explanation.score == pytest.approx((hits / 2 + rejections / 2) / 2)
    # one yes/no request per held-out window (plus one reachability check)
    assert second.requests_sent == 2 + 1 + 8
    second.close()

    # a third run over the same cache asks the server nothing and gets the same answers
    third = LLMExplainer(_config(server, cache))
    again = third.score_many(list(zip(third.explain_many(requests), held_out, strict=True)))
    assert third.requests_sent == 0 and third.cache_hits == 2 + 8
    assert [(e.text, e.score) for e in again] == [(e.text, e.score) for e in scored]


def test_sarm_explain_with_the_server_writes_scored_llm_explanations(server, tmp_path):
    """`sarm explain --explainer llm` end to end: stored windows in, scored rows in the store."""
    import pandas as pd
    from helpers import make_tiny_sarm

    from feature_store import FeatureStore, ingest
    from feature_store import explanations as ex
    from sarm.explain.evidence import EvidenceSpec

    sys.path.insert(0, str(Path(__file__).parents[1] / "store"))
    from test_store_ingest import make_groups

    store_path = tmp_path / "s.duckdb"
    model = make_tiny_sarm(tmp_path / "m", d_sae=64, k=8)
    with FeatureStore.open(store_path) as store:
        ingest(store, model, make_groups(), chunk_size=5, progress=False, evidence=EvidenceSpec(4))
        firing = ex.firing_features(store)
        # scored like the stats explainer: held-out positives against negatives drawn from
        # the same source and subset (the refresh at ingest drew them)
        heldout = ex.split_windows(store, "matched", firing)
    both = [f for f in firing if len({w.active for w in heldout.get(f, [])}) == 2][:2]
    assert len(both) == 2, "the tiny store must have features with both kinds of held-out window"
    cmd = [sys.executable, "-m", "workflows.cli", "explain", "--store", str(store_path)]
    cmd += ["--explainer", "llm", "--llm-base-url", server.base_url, "--llm-model", server.model]
    cmd += ["--features", ",".join(map(str, both)), "--json", "--quiet"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    with FeatureStore.open(store_path, read_only=True) as store:
        rows = store.explanations()
    rows = rows[rows["source"] == f"llm:{server.model}"].set_index("feature")
    assert sorted(rows.index) == sorted(both) and report["n_explained"] == 2
    for fid in both:
        details = rows.loc[fid, "details"]
        assert details["raw_reply"]  # the endpoint's own words are kept
        if not rows.loc[fid, "text"].strip():
            assert pd.isna(rows.loc[fid, "score"])  # no text: nothing to score
            continue
        said, active = details["detection"]["predicted"], details["detection"]["active"]
        assert active == [w.active for w in heldout[fid]]  # scored on the stored matched windows
        hits = sum(p for p, a in zip(said, active, strict=True) if a) / sum(active)
        rejections = sum(not p for p, a in zip(said, active, strict=True) if not a) / (
            len(active) - sum(active)
        )
        assert rows.loc[fid, "score"] == pytest.approx((hits + rejections) / 2)
    assert (store_path.parent / "s.duckdb.llm-replies.sqlite").is_file()  # resumable


def test_detect_gives_one_answer_per_window_in_batches(server):
    _, held_out = _evidence(202)
    explainer = LLMExplainer(_config(server, None, detect_batch_size=4))
    answers = explainer.detect("numbers and digits", held_out)
    assert len(answers) == len(held_out) and all(isinstance(a, bool) for a in answers)
    # a batch the model could not answer as a list is asked again window by window
    assert explainer.requests_sent in (2, 2 + len(held_out))


def test_a_timeout_is_retried_then_reported_and_a_killed_server_is_named(server):
    explain, _ = _evidence(101)
    explainer = LLMExplainer(_config(server, None, timeout_s=0.05, max_retries=1, backoff_s=0.0))
    with pytest.raises(ExplainerError, match=r"did not answer within 0.05 s \(2 tries\)"):
        explainer.explain(101, explain, [])
    assert explainer.requests_sent == 1 + 2 and explainer.client.retries == 1

    server.stop()
    killed = LLMExplainer(_config(server, None))
    with pytest.raises(ExplainerUnreachable, match=re.escape(server.base_url)):
        killed.explain(101, explain, [])
