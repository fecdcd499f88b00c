"""Shared test set-up: offline hub, seeded RNGs, tests/ on the import path."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np
import pytest
import torch

# Tiny models run faster on one thread, and the shared 2-core machines stay responsive.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def demo_report():
    """The embedded demo, built once per machine (cached afterwards) with every core."""
    from sarm.demo.build import build_demo

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return build_demo(progress=False)
    finally:
        torch.set_num_threads(threads)
