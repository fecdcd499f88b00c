"""examples/trl_grpo.py runs: SmolLM2 as the policy, real test-split prompts, the default
SARM as TRL's reward; it names the head it trained on and the rewards TRL logged."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sarm import load_sarm

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_grpo_example_trains_a_step_on_the_default_reward():
    if not os.environ.get("SARM_REQUIRE_TRL"):
        pytest.importorskip("trl", reason="TRL is not installed (pip install .[trl])")
    out = subprocess.run(
        [sys.executable, "examples/trl_grpo.py", "--steps", "1", "--prompts", "2",
         "--generations", "2", "--max-completion-length", "8"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    head = load_sarm("default").head.hash()
    assert f"trained on the SARM head {head}" in out.stdout
    assert re.search(r"^step 1: mean SARM reward [+-]\d+\.\d{4}$", out.stdout, re.M), out.stdout
