"""`sarm serve` for real: started as a process, called over HTTP, stopped.

The served head is an exported head file or a head version saved in a store;
/score shows the store's explanations; bad arguments fail before anything loads.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import make_released_checkpoint
from serving import free_port

from feature_store import FeatureStore, ingest
from feature_store.explanations import run_stats_explainer
from sarm import load_sarm
from sarm.explain.evidence import EvidenceSpec
from sarm.export import edit_manifest, model_info, write_head
from sarm.head import Head
from workflows.serve.app import HEAD_HEADER

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "store"))
from test_store_ingest import make_groups  # noqa: E402

CONV = [
    {"role": "user", "content": "Tell me about tea."},
    {"role": "assistant", "content": "Here is a careful answer about tea."},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny checkpoint, its store (stats explanations, an edited head version), an export."""
    root = tmp_path_factory.mktemp("serve-cli")
    ckpt = make_released_checkpoint(root / "tiny", template="chatml")
    model = load_sarm(ckpt)
    store_path = root / "s.duckdb"
    with FeatureStore.open(store_path) as store:
        ingest(store, model, make_groups(), batch_size=4, chunk_size=5, top_n=3,
               progress=False, evidence=EvidenceSpec(4))  # fmt: skip
        run_stats_explainer(store)
        weights = model.head.weights.copy()
        weights[:8] = 0.0
        store.save_head("no-first-8", weights, bias=0.25, parent="ingest")
    edit = model.head.edit({3: 2.0, 5: -1.5})
    manifest = edit_manifest(edit, model_info(model))
    write_head(edit, manifest, root / "exported")
    return {"ckpt": ckpt, "store": store_path, "export": root / "exported",
            "manifest": manifest, "model": model, "weights": weights}  # fmt: skip


class Served:
    """`sarm serve ARGS` on a free port, stopped with SIGINT (as Ctrl-C does)."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "workflows.cli", "serve", *args, "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Served:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sarm serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("sarm serve did not answer /health within 120 s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.code = self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.stderr = self.proc.stderr.read()


def query(model) -> str:
    tok = model.tokenizer
    prompt = tok.apply_chat_template(CONV[:1], tokenize=False, add_generation_prompt=True)
    return prompt + CONV[1]["content"] + tok.eos_token


def test_serves_a_head_version_from_the_store_with_its_explanations(setup):
    model = setup["model"]
    head = Head(setup["weights"], 0.25)
    with Served("--model", str(setup["ckpt"]), "--store", str(setup["store"]),
                "--head", "no-first-8") as served:  # fmt: skip
        health = httpx.get(f"{served.url}/health").json()
        assert health["head_hash"] == head.hash() != model.head.hash()
        assert health["explained_features"] > 0
        got = httpx.post(f"{served.url}/get_reward", json={"query": [query(model)]})
        assert got.headers[HEAD_HEADER] == head.hash()
        want = float(head.rewards(model.pooled_latents([CONV]).latents)[0])
        assert got.json()["rewards"][0] == pytest.approx(want, abs=1e-5)
        top = httpx.post(f"{served.url}/score?top=50", json={"messages": CONV}).json()["top"]
    with FeatureStore.open(setup["store"], read_only=True) as store:
        shown = store.display_explanations().set_index("feature")["text"]
    for entry in top:
        expected = shown.get(entry["feature"])
        assert entry["explanation"] == expected
    assert any(entry["explanation"] for entry in top)
    assert served.code == 0, served.stderr


def test_serves_an_exported_head_under_the_manifest_hash(setup):
    model = setup["model"]
    with Served("--model", str(setup["ckpt"]), "--head", str(setup["export"])) as served:
        health = httpx.get(f"{served.url}/health").json()
        assert health["head_hash"] == setup["manifest"]["head"]["hash"]
        assert health["explained_features"] == 0
        exported = Head.load(setup["export"])
        got = httpx.post(f"{served.url}/score", json={"messages": CONV}).json()["reward"]
        want = float(exported.rewards(model.pooled_latents([CONV]).latents)[0])
        assert got == pytest.approx(want, abs=1e-5)
        assert not np.isclose(got, model.score(messages=CONV).reward)
    assert served.code == 0, served.stderr


def sarm_serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflows.cli", "serve", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip


def test_bad_arguments_fail_with_one_line(setup, tmp_path):
    ckpt = str(setup["ckpt"])
    cases = [
        (["--model", ckpt, "--head", str(tmp_path / "nope.safetensors")], "--store"),
        (["--model", ckpt, "--store", str(tmp_path / "none.duckdb")], "no such feature store"),
        (["--model", ckpt, "--store", str(setup["store"]), "--head", "missing"], "missing"),
        (["--model", ckpt, "--port", "70000"], "--port"),
        (["--model", ckpt, "--max-body-mb", "0"], "--max-body-mb"),
    ]
    for args, needle in cases:
        out = sarm_serve(*args)
        assert out.returncode in (1, 2) and needle in out.stderr, (args, out.stderr)
        assert out.stderr.strip().splitlines()[-1].startswith("sarm serve: error:")
