"""What a from-scratch build of the default does: layers, candidates, sizes, seed, limit.

:data:`FULL` is the shipped default's plan; :func:`quick` is a small plan over the
first ``limit`` groups of each split, for tests and CI (same code path, minutes).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sarm.cachedir import cache_dir

Shape = tuple[str, int, int, int]  # (level, d_sae, k, n_samples)


@dataclass(frozen=True)
class BuildPlan:
    """Everything that determines the default's artefacts (hashed into ``key``)."""

    layers: tuple[int, ...] = (9, 12, 15, 18, 21)
    tokens_per_row: int = 16
    max_length: int = 1024
    seed: int = 0
    limit: int | None = None  # groups per split; None = all
    sae_layers: int = 2  # stage 1: SAEs at the layers where the dense probe is best on dev
    layer_shape: Shape = ("sequence", 4096, 32, 60_000)
    grid: tuple[Shape, ...] = (  # stage 2, at the best of those layers
        ("sequence", 8192, 32, 100_000),
        ("sequence", 4096, 64, 100_000),
        ("token", 8192, 32, 100_000),
        # added after the first three: k = 64 beat k = 32, so larger k and a smaller dictionary
        ("sequence", 4096, 128, 100_000),
        ("sequence", 2048, 64, 100_000),
    )
    sae_batch_size: int = 512
    final_factor: int = 3  # the winner trains on this many times its sweep samples

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def root(self) -> Path:
        """Where this plan's intermediate files live (captures, sweep)."""
        base = cache_dir() / "default-build"
        return base if self == FULL else base / f"plan-{self.key()}"

    def to_dict(self) -> dict:
        return asdict(self)


FULL = BuildPlan()


def quick(limit: int) -> BuildPlan:
    """A small plan over the first ``limit`` groups per split (tests, CI, a first look)."""
    return BuildPlan(
        layers=(3, 6),
        tokens_per_row=4,
        limit=limit,
        sae_layers=1,
        layer_shape=("sequence", 256, 8, 4096),
        grid=(("token", 256, 8, 4096),),
        final_factor=1,
    )
