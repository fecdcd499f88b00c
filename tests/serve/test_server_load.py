"""The load test (benchmarks/reward_server_load.py) against a real `sarm serve` process:
2,000 requests, some malformed, some disconnecting; every valid one answered 200, every bad
one a 4xx, the server still up and healthy after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import make_released_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_two_thousand_mixed_requests(tmp_path):
    ckpt = make_released_checkpoint(tmp_path / "tiny", template="chatml")
    out = subprocess.run(
        [sys.executable, "benchmarks/reward_server_load.py", "--model", str(ckpt),
         "--requests", "2000", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-2])
    assert summary["requests"] == 2000
    kinds = summary["by_kind"]
    assert {
        "valid-get_reward",
        "valid-score",
        "valid-long",
        "valid-special",
        "bad",
        "leave",
    } <= set(kinds)
    assert summary["valid_5xx"] == 0 and summary["valid_not_200"] == 0, kinds
    assert summary["bad_not_4xx"] == 0 and 413 in {int(s) for s in kinds["bad"]}, kinds["bad"]
    assert not summary["crashed"] and summary["health_after"] == 200
    assert not summary["client_errors"]
    assert out.stdout.strip().splitlines()[-1].startswith("requests=2000 valid_5xx=0")
