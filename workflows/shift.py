"""The preference-shift workflow over a feature store or data files.

Loads the rows two set specs need (from a store's cached latents, or by
scoring data with a model), then discovers features and evaluates
interventions with :mod:`sarm.shift`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_store import FeatureStore
from sarm.data import resolve_data
from sarm.interventions import Intervention, fold_into_head
from sarm.scoring import score_groups
from sarm.shift.data import STORE_SOURCE, ShiftData
from sarm.shift.discovery import Labels, discover_features
from sarm.shift.report import ShiftReport, evaluate_shift
from sarm.shift.rows import _disjoint, as_rows
from sarm.shift.specs import SetSpec, select_rows

logger = logging.getLogger("sarm.shift")  # the name its messages have always had


@dataclass(eq=False)
class PreferenceShift:
    """A target and a complement over one :class:`ShiftData`, ready to discover and evaluate."""

    data: ShiftData
    target: np.ndarray
    complement: np.ndarray
    target_spec: str = "target"
    complement_spec: str = "complement"
    labels: Labels = None
    base_rewards: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.target = as_rows(self.target, self.data.n, "target")
        self.complement = as_rows(self.complement, self.data.n, "complement")
        _disjoint(self.target, self.complement)
        self.base_rewards = self.data.rewards()

    def discover(self, limit: int | None = 10, **kwargs: Any) -> pd.DataFrame:
        """:func:`discover_features` on this target and complement."""
        return discover_features(
            self.data.latents,
            self.target,
            self.complement,
            weight=self.data.weight,
            roles=self.data.examples["role"].to_numpy(),
            labels=self.labels,
            limit=limit,
            **kwargs,
        )

    def evaluate(self, interventions: Sequence[Intervention]) -> ShiftReport:
        """:func:`evaluate_shift` on this target and complement (milliseconds)."""
        return evaluate_shift(
            self.data.latents,
            self.data.weight,
            self.data.bias,
            interventions,
            self.target,
            self.complement,
            self.data.pair_index,
            base_rewards=self.base_rewards,
        )

    def head(self, interventions: Sequence[Intervention]) -> tuple[np.ndarray, float]:
        """The proposed head ``(weights float32, bias)`` (see :func:`fold_into_head`)."""
        return fold_into_head(self.data.weight, interventions).astype(np.float32), self.data.bias


def store_shift_data(
    store: FeatureStore, weight: np.ndarray | None = None, bias: float | None = None
) -> ShiftData:
    """Every example of a feature store; the store's ingest head unless given."""
    frame = store.examples_frame().assign(source=STORE_SOURCE)
    w, b = store.head_weights()
    return ShiftData(
        store.latent_matrix(),
        frame,
        w if weight is None else weight,
        b if bias is None else bias,
    )


def _store_part(store: FeatureStore, model: Any | None) -> ShiftData:
    if model is None:
        return store_shift_data(store)
    store.check_model(model.fingerprint())
    return store_shift_data(store, model.head.weight, model.head.bias)


def _scored_part(source: str, model: Any | None, batch_size: int, progress: bool) -> ShiftData:
    if model is None:
        raise ValueError(f"data source {source!r} needs a model to score it")
    loaded = resolve_data(source)
    if loaded.n_skipped:
        logger.warning("%s: %d malformed rows skipped", source, loaded.n_skipped)
    scored = score_groups(model, loaded.groups, batch_size=batch_size, progress=progress)
    head = model.head
    return ShiftData.from_scored(scored, loaded.groups, head.weight, head.bias, source)


def prepare_shift(
    target: str,
    complement: str = "rest",
    *,
    store: FeatureStore | None = None,
    model: Any | None = None,
    data: str | None = None,
    weight: np.ndarray | None = None,
    bias: float | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> PreferenceShift:
    """Load the rows that ``target`` and ``complement`` need and select them.

    The base is ``data`` (a file or ``demo:*``, scored once with ``model``) or
    else ``store``. Source terms (``file:``, ``demo:``) add their data, scored
    with ``model``. Rewards use ``model``'s head when a model is given, else the
    store's ingest head; ``weight``/``bias`` override both (e.g. a saved head
    version). Labels come from ``store`` when there is one.
    """
    t_spec, c_spec = SetSpec.parse(target), SetSpec.parse(complement)
    if t_spec.is_rest:
        raise ValueError("'rest' is only allowed in the complement (it means: not the target)")
    base_name = data if data is not None else (STORE_SOURCE if store is not None else None)
    parts: dict[str, ShiftData] = {}
    if base_name is not None and _needs_base(t_spec, c_spec):
        parts[base_name] = (
            _scored_part(data, model, batch_size, progress)
            if data is not None
            else _store_part(store, model)
        )
    for source in dict.fromkeys(t_spec.sources + c_spec.sources):
        if source not in parts:
            parts[source] = _scored_part(source, model, batch_size, progress)
    if not parts:
        raise ValueError(
            f"set spec {target!r} filters a base dataset: give a feature store or data"
        )
    universe = ShiftData.concat(list(parts.values()))
    if weight is not None or bias is not None:
        universe = dataclasses.replace(
            universe,
            weight=universe.weight if weight is None else weight,
            bias=universe.bias if bias is None else bias,
        )
    search = _label_search(store)
    rows_t = select_rows(universe, t_spec, base=base_name, search_labels=search)
    rows_c = select_rows(universe, c_spec, target=rows_t, base=base_name, search_labels=search)
    labels = store.labels_for if store is not None else None
    return PreferenceShift(universe, rows_t, rows_c, t_spec.text, c_spec.text, labels)


def _needs_base(*specs: SetSpec) -> bool:
    return any(not s.sources for s in specs)


def _label_search(store: FeatureStore | None) -> Callable[[str], list[int]] | None:
    if store is None:
        return None

    def search(text: str) -> list[int]:
        found = store.search_labels(text, limit=100_000)
        return [int(f) for f in found["feature_id"]]

    return search
