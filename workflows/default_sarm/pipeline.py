"""``sarm build-default --from-scratch``: capture, sweep, train, evaluate, write.

Each step reuses what an earlier run left in the plan's cache directory, so an
interrupted build resumes; ``--limit N`` runs the same code on the first ``N``
groups of every split with a small plan (minutes, for tests and CI).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from workflows.default_sarm.build import build_from_cache
from workflows.default_sarm.capture import capture_split, load_plan_backbone
from workflows.default_sarm.data import SPLITS, load_split
from workflows.default_sarm.error_head import capture_heldout
from workflows.default_sarm.plan import FULL, BuildPlan, quick
from workflows.default_sarm.sweep import run_sweep


def plan_for(limit: int | None) -> BuildPlan:
    return FULL if limit is None else quick(limit)


def build_from_scratch(plan: BuildPlan, out: Path | None = None, progress: bool = True) -> dict:
    """Run every step of ``plan``; returns the written manifest."""
    torch.manual_seed(plan.seed)
    start = time.perf_counter()
    backbone = load_plan_backbone(plan)
    for name in SPLITS:
        capture_split(load_split(name, limit=plan.limit), backbone, plan, progress)
    capture_heldout(plan, backbone, progress)
    del backbone
    captured = time.perf_counter()
    run_sweep(plan, progress)
    swept = time.perf_counter()
    manifest = build_from_cache(plan, out, progress)
    manifest["from_scratch_seconds"] = {
        "capture": round(captured - start, 1),
        "sweep": round(swept - captured, 1),
        "build": round(time.perf_counter() - swept, 1),
    }
    return manifest
