"""Shared test set-up: offline hub, a temporary cache, seeded RNGs, tests/ on the import path.

Every test runs with ``SARM_CACHE_DIR`` pointing at a temporary folder made for
this session (the embedded backbone and the default SARM are built there once),
never at the user's ``~/.cache/sarm``. A developer may set
``SARM_TEST_CACHE_DIR`` to a folder of their own to keep those builds between
runs; it may not be the user's cache.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).parent))

USER_CACHE = (Path.home() / ".cache" / "sarm").resolve()
_KEPT_CACHE = os.environ.get("SARM_TEST_CACHE_DIR", "").strip()
TEST_CACHE = Path(_KEPT_CACHE or tempfile.mkdtemp(prefix="sarm-test-cache-")).resolve()
if TEST_CACHE == USER_CACHE:
    raise RuntimeError(f"SARM_TEST_CACHE_DIR must not be the user's cache {USER_CACHE}")
TEST_CACHE.mkdir(parents=True, exist_ok=True)
os.environ["SARM_CACHE_DIR"] = str(TEST_CACHE)  # subprocesses (CLI, Streamlit) inherit it

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from workflows.build_default import build_demo  # noqa: E402

# Tiny models run faster on one thread, and the shared 2-core machines stay responsive.
torch.set_num_threads(1)


def pytest_sessionfinish(session, exitstatus):
    if not _KEPT_CACHE:
        shutil.rmtree(TEST_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def demo_report():
    """The embedded default, built once per session in the temporary cache, with every core."""

    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        return build_demo(progress=False)
    finally:
        torch.set_num_threads(threads)
