"""Shift data: pooled latents of every response with the metadata set specs filter on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sarm.constants import NO_SUBSET
from sarm.evaluate import PairIndex
from sarm.head import rewards
from sarm.latents import SparseLatents
from sarm.shift.rows import _weights

if TYPE_CHECKING:
    from sarm.types import PreferenceGroup

STORE_SOURCE = "store"
EXAMPLE_COLUMNS = ("source", "group_id", "role", "response_index", "kind", "subset")


@dataclass(eq=False)
class ShiftData:
    """Pooled latents of every response with the metadata set specs filter on.

    ``examples`` has one row per latent row with columns ``source, group_id, role,
    response_index, kind, subset`` (``subset`` None becomes ``"(none)"``).
    """

    latents: SparseLatents
    examples: pd.DataFrame
    weight: np.ndarray
    bias: float = 0.0
    pair_index: PairIndex = field(init=False)

    def __post_init__(self) -> None:
        missing = set(EXAMPLE_COLUMNS) - set(self.examples.columns)
        if missing:
            raise ValueError(f"ShiftData.examples is missing columns {sorted(missing)}")
        if len(self.examples) != self.latents.n:
            raise ValueError(
                f"ShiftData: {len(self.examples)} example rows for {self.latents.n} latent rows"
            )
        self.examples = self.examples.reset_index(drop=True).assign(
            subset=self.examples["subset"].fillna(NO_SUBSET).to_numpy()
        )
        self.weight = _weights(self.weight, self.latents.d_sae).copy()
        self.bias = float(self.bias)
        self.pair_index = _pair_index(self.examples)

    @property
    def n(self) -> int:
        return self.latents.n

    @classmethod
    def from_scored(
        cls,
        scored: Any,
        groups: Sequence[PreferenceGroup],
        weight: np.ndarray,
        bias: float = 0.0,
        source: str = "data",
    ) -> ShiftData:
        """From :func:`sarm.scoring.score_groups` output and the groups it scored."""
        by_id = {g.group_id: g for g in groups}
        rows = [
            (source, gid, role, i, by_id[gid].kind, by_id[gid].subset)
            for gid, role, i in scored.keys
        ]
        frame = pd.DataFrame(rows, columns=list(EXAMPLE_COLUMNS))
        return cls(scored.latents, frame, weight, bias)

    @classmethod
    def concat(cls, parts: Sequence[ShiftData]) -> ShiftData:
        """One universe from several parts (same SAE size; the first part's head)."""
        if not parts:
            raise ValueError("ShiftData.concat needs at least one part")
        sizes = {p.latents.d_sae for p in parts}
        if len(sizes) != 1:
            raise ValueError(f"ShiftData parts have different SAE sizes {sorted(sizes)}")
        offsets = np.cumsum([0] + [p.latents.nnz for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.latents.indptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
        )
        latents = SparseLatents(
            indptr,
            np.concatenate([p.latents.indices for p in parts]),
            np.concatenate([p.latents.values for p in parts]),
            sizes.pop(),
        )  # rows renumbered 0..n-1: example ids are only unique within a part
        frame = pd.concat([p.examples[list(EXAMPLE_COLUMNS)] for p in parts], ignore_index=True)
        return cls(latents, frame, parts[0].weight, parts[0].bias)

    def rewards(self) -> np.ndarray:
        return rewards(self.latents, self.weight, self.bias)


def _pair_index(frame: pd.DataFrame) -> PairIndex:
    """Every chosen x rejected comparison within a group (``single`` groups give none).

    A group is a ``(source, group_id)``; it is named ``source/group_id`` when
    several sources are loaded.
    """
    key = frame["source"].astype(str) + "\x1f" + frame["group_id"].astype(str)
    group_index, keys = pd.factorize(key)
    names = np.asarray(_group_names(keys, frame["source"].nunique() > 1), dtype=object)
    return PairIndex.from_frame(
        frame.assign(group_index=group_index, group_id=names[group_index] if len(names) else [])
    )


def _group_names(keys: pd.Index, with_source: bool) -> tuple[str, ...]:
    """``group_id`` (or ``source/group_id`` when several sources are loaded)."""
    pairs = (str(k).split("\x1f", 1) for k in keys)
    return tuple(f"{s}/{g}" if with_source else g for s, g in pairs)
