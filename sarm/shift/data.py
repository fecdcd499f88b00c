"""Shift data: pooled latents of every response with the metadata set specs filter on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sarm.evaluate import NO_SUBSET, PairIndex
from sarm.shift.rows import _weights
from sarm.sparse import SparseLatents
from sarm.types import GROUP_KINDS

if TYPE_CHECKING:
    from feature_store import FeatureStore
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
    def from_store(
        cls, store: FeatureStore, weight: np.ndarray | None = None, bias: float | None = None
    ) -> ShiftData:
        """Every example of a feature store; the store's ingest head unless given."""
        matrix = store.latent_matrix()
        latents = SparseLatents(matrix.indptr, matrix.feature_ids, matrix.values, matrix.d_sae)
        frame = store.examples_frame().assign(source=STORE_SOURCE)
        w, b = store.head_weights()
        return cls(latents, frame, w if weight is None else weight, b if bias is None else bias)

    @classmethod
    def from_scored(
        cls, scored: Any, groups: Sequence[PreferenceGroup], weight: np.ndarray,
        bias: float = 0.0, source: str = "data",
    ) -> ShiftData:  # fmt: skip
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
        )
        frame = pd.concat([p.examples[list(EXAMPLE_COLUMNS)] for p in parts], ignore_index=True)
        return cls(latents, frame, parts[0].weight, parts[0].bias)

    def rewards(self) -> np.ndarray:
        return self.latents.rewards(self.weight, self.bias)


def _pair_index(frame: pd.DataFrame) -> PairIndex:
    """Every chosen x rejected comparison within a group (``single`` groups give none)."""
    key = frame["source"].astype(str) + "\x1f" + frame["group_id"].astype(str)
    group_code, group_ids = pd.factorize(key)
    subset_names = sorted(frame["subset"].astype(str).unique())
    table = pd.DataFrame(
        {
            "row": np.arange(len(frame)), "group": group_code, "role": frame["role"].to_numpy(),
            "index": frame["response_index"].to_numpy(dtype=np.int64),
            "subset": pd.Categorical(frame["subset"].astype(str), subset_names).codes,
            "kind": frame["kind"].map({k: c for c, k in enumerate(GROUP_KINDS)}).to_numpy(),
        }
    )  # fmt: skip
    pairs = table[table.role == "chosen"].merge(
        table[table.role == "rejected"][["group", "row", "index"]], on="group", suffixes=("", "_r")
    )
    pairs = pairs.sort_values(["group", "index", "index_r"], kind="stable")
    return PairIndex(
        chosen_row=pairs["row"].to_numpy(np.int64), rejected_row=pairs["row_r"].to_numpy(np.int64),
        group=pairs["group"].to_numpy(np.int64), subset=pairs["subset"].to_numpy(np.int64),
        subset_names=tuple(subset_names), kind=pairs["kind"].to_numpy(np.int64),
        chosen_index=pairs["index"].to_numpy(np.int64),
        rejected_index=pairs["index_r"].to_numpy(np.int64),
        group_ids=_group_names(group_ids, frame["source"].nunique() > 1),
    )  # fmt: skip


def _group_names(keys: pd.Index, with_source: bool) -> tuple[str, ...]:
    """``group_id`` (or ``source/group_id`` when several sources are loaded)."""
    pairs = (str(k).split("\x1f", 1) for k in keys)
    return tuple(f"{s}/{g}" if with_source else g for s, g in pairs)
