"""Step 1 of the default's build: the multi-layer backbone pass over every split.

Writes ``<plan root>/capture/<split>/part-*.safetensors`` (resumable: a rerun
computes only the missing parts).
"""

from __future__ import annotations

from sarm.backbones import Backbone, load_backbone
from sarm.constants import EMBEDDED_BACKBONE
from sarm.train.capture import LayerCapture, capture_layers, load_capture
from workflows.default_sarm.data import SplitData
from workflows.default_sarm.plan import BuildPlan


def load_plan_backbone(plan: BuildPlan) -> Backbone:
    """The embedded backbone cut at the plan's deepest layer."""
    return load_backbone(EMBEDDED_BACKBONE, max(plan.layers), max_length=plan.max_length)


def capture_split(
    split: SplitData, backbone: Backbone, plan: BuildPlan, progress: bool = True
) -> LayerCapture:
    """The cached capture of one split (runs the backbone for missing parts only)."""
    return capture_layers(
        backbone,
        split.conversations,
        plan.layers,
        plan.root() / "capture" / split.name,
        tokens_per_row=plan.tokens_per_row,
        seed=plan.seed,
        progress=progress,
    )


def cached_capture(plan: BuildPlan, split: str) -> LayerCapture:
    """A split's capture written earlier (raises if parts are missing)."""
    return load_capture(plan.root() / "capture" / split)
