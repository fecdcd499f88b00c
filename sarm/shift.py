"""Preference shift: find the features behind a preference, change them, measure the shift.

Three steps, all on cached pooled latents (the backbone never runs again):

1. :func:`discover_features` ranks features by how they separate a *target* set
   of responses from a *complement* set;
2. :mod:`sarm.interventions` describes the change (weight edits, latent steering);
3. :func:`evaluate_shift` measures how rewards and pairwise accuracy move on each
   set, and the selectivity ratio ``mean |delta r| on target / on complement``.

:func:`prepare_shift` ties them to a feature store or data files through a small
set-spec grammar (see ``docs/preference_shift.md``)::

    shift = prepare_shift("subset:refusal", "rest", store=store)
    table = shift.discover(limit=10)
    report = shift.evaluate(parse_actions(["scale:0"], table.feature_id[:5]))
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import pandas as pd

from sarm.evaluate import NO_SUBSET, PairIndex, pair_correct
from sarm.interventions import Intervention, fold_into_head, shifted_rewards
from sarm.sparse import SparseLatents
from sarm.types import GROUP_KINDS, ROLES

if TYPE_CHECKING:
    from feature_store import FeatureStore
    from sarm.types import PreferenceGroup

__all__ = [
    "DIRECTIONS",
    "ORDERS",
    "PreferenceShift",
    "SetShift",
    "SetSpec",
    "ShiftData",
    "ShiftReport",
    "discover_features",
    "evaluate_shift",
    "feature_contrast",
    "prepare_shift",
    "select_rows",
]

logger = logging.getLogger(__name__)

Direction = Literal["target", "complement", "both"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
ORDERS: tuple[str, ...] = (
    "score", "mean_diff", "freq_ratio", "selectivity", "salience", "contribution",
)  # fmt: skip
STORE_SOURCE = "store"
ZERO_CHANGE = 1e-12  # mean |delta r| at or below this counts as "unchanged"
Labels = Mapping[int, str] | Callable[[list[int]], Mapping[int, str]] | None
EXAMPLE_COLUMNS = ("source", "group_id", "role", "response_index", "kind", "subset")


# ------------------------------------------------------------------------ rows


def as_rows(rows: object, n: int, what: str) -> np.ndarray:
    """Sorted example rows from an index array or a boolean mask of length ``n``."""
    arr = np.asarray(rows)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise ValueError(f"{what}: a boolean mask needs {n} entries, got shape {arr.shape}")
        arr = np.flatnonzero(arr)
    if arr.size == 0:
        raise ValueError(f"{what} is empty: it selects no examples")
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be row numbers or a boolean mask, got {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n:
        raise ValueError(f"{what} has rows outside 0..{n - 1}")
    out = np.unique(arr.astype(np.int64))
    if len(out) != len(arr):
        raise ValueError(f"{what} lists {len(arr) - len(out)} rows more than once")
    return out


def _mask(rows: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[rows] = True
    return out


def _disjoint(target: np.ndarray, complement: np.ndarray) -> None:
    shared = np.intersect1d(target, complement)
    if len(shared):
        raise ValueError(
            f"target and complement share {len(shared)} examples (first row {shared[0]}); "
            "use 'rest' or a disjoint complement"
        )


# ------------------------------------------------------------------- discovery


@dataclass(frozen=True)
class _SetSums:
    """Per-feature sums over the stored non-zeros of one set of rows."""

    n: int
    count: np.ndarray
    total: np.ndarray
    abs_total: np.ndarray

    @classmethod
    def of(cls, latents: SparseLatents, mask: np.ndarray) -> _SetSums:
        sel = mask[latents.row_ids()]
        idx, vals = latents.indices[sel], latents.values[sel].astype(np.float64)
        d = latents.d_sae
        return cls(
            int(mask.sum()),
            np.bincount(idx, minlength=d),
            np.bincount(idx, weights=vals, minlength=d),
            np.bincount(idx, weights=np.abs(vals), minlength=d),
        )

    @property
    def mean(self) -> np.ndarray:
        return self.total / self.n if self.n else np.full(len(self.total), np.nan)


def _consistency(
    latents: SparseLatents, target: np.ndarray, mean_c: np.ndarray, diff: np.ndarray
) -> np.ndarray:
    """Fraction of target rows whose activation lies strictly on the target side of
    the complement mean (inactive rows count with activation 0)."""
    mask = _mask(target, latents.n)
    sel = mask[latents.row_ids()]
    idx, vals = latents.indices[sel], latents.values[sel].astype(np.float64)
    side = np.sign(diff)
    ok = (np.sign(vals - mean_c[idx]) == side[idx]) & (side[idx] != 0)
    active_ok = np.bincount(idx, weights=ok, minlength=latents.d_sae)
    count = np.bincount(idx, minlength=latents.d_sae)
    inactive_ok = (len(target) - count) * ((np.sign(-mean_c) == side) & (side != 0))
    return (active_ok + inactive_ok) / len(target)


def _salience(latents: SparseLatents, target: np.ndarray, roles: np.ndarray | None) -> np.ndarray:
    """SAFER salience within the target, as the store defines it:
    ``(a_c - a_r) / (a_c + a_r + 2 m)``, ``m`` the target mean; NaN where undefined."""
    d = latents.d_sae
    if roles is None:
        return np.full(d, np.nan)
    roles = np.asarray(roles)
    if roles.shape != (latents.n,):
        raise ValueError(f"roles must have one entry per example ({latents.n}), got {roles.shape}")
    in_t = _mask(target, latents.n)
    chosen = _SetSums.of(latents, in_t & (roles == "chosen"))
    rejected = _SetSums.of(latents, in_t & (roles == "rejected"))
    if not chosen.n or not rejected.n:
        return np.full(d, np.nan)
    a_c, a_r = chosen.mean, rejected.mean
    m = _SetSums.of(latents, in_t).mean
    denom = a_c + a_r + 2 * m
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom != 0, (a_c - a_r) / denom, np.nan)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with ``inf`` where only the denominator is 0 and NaN where both are."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.where(num > 0, np.inf, np.nan))


def feature_contrast(
    latents: SparseLatents,
    target: object,
    complement: object,
    *,
    weight: np.ndarray | None = None,
    roles: np.ndarray | None = None,
) -> pd.DataFrame:
    """Contrastive statistics of every feature active in the target or the complement.

    Columns (T = target rows, C = complement rows, zeros included in means):
    ``feature_id, score, mean_target, mean_complement, mean_diff, consistency,
    freq_target, freq_complement, freq_ratio, mean_abs_target, mean_abs_complement,
    selectivity, salience, weight, contribution_target, contribution_complement``.
    ``score = |mean_diff| * consistency``; ``freq_ratio`` is Laplace-smoothed
    ``((n_T + 1) / (|T| + 2)) / ((n_C + 1) / (|C| + 2))``; ``selectivity`` is
    ``mean |z| on T / mean |z| on C``, the selectivity ratio of a weight edit of
    that feature alone (``inf`` when it never fires on C).
    """
    target = as_rows(target, latents.n, "target")
    complement = as_rows(complement, latents.n, "complement")
    _disjoint(target, complement)
    t = _SetSums.of(latents, _mask(target, latents.n))
    c = _SetSums.of(latents, _mask(complement, latents.n))
    w = np.zeros(latents.d_sae) if weight is None else _weights(weight, latents.d_sae)
    diff = t.mean - c.mean
    consistency = _consistency(latents, target, c.mean, diff)
    cols = {
        "feature_id": np.arange(latents.d_sae),
        "score": np.abs(diff) * consistency,
        "mean_target": t.mean,
        "mean_complement": c.mean,
        "mean_diff": diff,
        "consistency": consistency,
        "freq_target": t.count / t.n,
        "freq_complement": c.count / c.n,
        "freq_ratio": ((t.count + 1) / (t.n + 2)) / ((c.count + 1) / (c.n + 2)),
        "mean_abs_target": t.abs_total / t.n,
        "mean_abs_complement": c.abs_total / c.n,
        "selectivity": _ratio(t.abs_total / t.n, c.abs_total / c.n),
        "salience": _salience(latents, target, roles),
        "weight": w,
        "contribution_target": w * t.mean,
        "contribution_complement": w * c.mean,
    }
    active = (t.count + c.count) > 0
    return pd.DataFrame({k: v[active] for k, v in cols.items()}).reset_index(drop=True)


def _weights(weight: np.ndarray, d_sae: int) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != (d_sae,):
        raise ValueError(f"weight must have shape ({d_sae},), got {w.shape}")
    return w


def _order_key(frame: pd.DataFrame, order_by: str) -> pd.Series:
    if order_by not in ORDERS:
        raise ValueError(f"order_by must be one of {list(ORDERS)}, got {order_by!r}")
    column = {"contribution": "contribution_target"}.get(order_by, order_by)
    key = frame[column]
    return key.abs() if order_by in ("mean_diff", "salience", "contribution") else key


def _direction_mask(frame: pd.DataFrame, direction: str) -> pd.Series:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    if direction == "both":
        return pd.Series(True, index=frame.index)
    t, c = frame["mean_abs_target"], frame["mean_abs_complement"]
    return t > c if direction == "target" else t < c


def _label_map(labels: Labels, ids: list[int]) -> Mapping[int, str]:
    if labels is None or not ids:
        return {}
    return labels(ids) if callable(labels) else labels


def discover_features(
    latents: SparseLatents,
    target: object,
    complement: object,
    *,
    weight: np.ndarray | None = None,
    roles: np.ndarray | None = None,
    labels: Labels = None,
    direction: Direction = "target",
    order_by: str = "score",
    limit: int | None = 20,
) -> pd.DataFrame:
    """The features that separate ``target`` from ``complement``, best first.

    ``direction="target"`` keeps features larger in magnitude on the target
    (``mean |z|``), ``"complement"`` the opposite, ``"both"`` all. Rows are sorted
    by ``order_by`` (one of :data:`ORDERS`; ``mean_diff``, ``salience`` and
    ``contribution`` by absolute value) descending, ties by feature id; ``labels``
    (a mapping, or a callable such as ``store.labels_for``) fills ``label``.
    """
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    frame = feature_contrast(latents, target, complement, weight=weight, roles=roles)
    frame = frame[_direction_mask(frame, direction)]
    key = _order_key(frame, order_by).fillna(-np.inf)
    order = np.lexsort((frame["feature_id"].to_numpy(), -key.to_numpy()))
    frame = frame.iloc[order[:limit] if limit is not None else order].reset_index(drop=True)
    names = _label_map(labels, [int(f) for f in frame["feature_id"]])
    frame["label"] = [names.get(int(f)) for f in frame["feature_id"]]
    return frame


# ------------------------------------------------------------------ evaluation


def _accuracy(correct: np.ndarray) -> float | None:
    return float(correct.mean()) if len(correct) else None


@dataclass(frozen=True, eq=False)
class SetShift:
    """How one set of responses moved: rewards before/after and pairwise accuracy.

    Pairs count when both responses lie in the set.
    """

    name: str
    rows: np.ndarray
    rewards_before: np.ndarray
    rewards_after: np.ndarray
    n_pairs: int
    accuracy_before: float | None
    accuracy_after: float | None
    n_flipped: int

    def __post_init__(self) -> None:
        n = len(self.rows)
        if n == 0:
            raise ValueError(f"SetShift {self.name!r} has no rows")
        if self.rewards_before.shape != (n,) or self.rewards_after.shape != (n,):
            raise ValueError(f"SetShift {self.name!r}: reward arrays must have {n} entries")
        if (self.accuracy_before is None) != (self.n_pairs == 0):
            raise ValueError(f"SetShift {self.name!r}: accuracy is None exactly when n_pairs is 0")

    @classmethod
    def measure(
        cls, name: str, rows: np.ndarray, before: np.ndarray, after: np.ndarray,
        index: PairIndex, correct: tuple[np.ndarray, np.ndarray],
    ) -> SetShift:  # fmt: skip
        inside = _mask(rows, len(before))
        pairs = inside[index.chosen_row] & inside[index.rejected_row]
        ok_before, ok_after = correct[0][pairs], correct[1][pairs]
        return cls(
            name, rows, before[rows], after[rows], int(pairs.sum()),
            _accuracy(ok_before), _accuracy(ok_after), int((ok_before != ok_after).sum()),
        )  # fmt: skip

    @property
    def n_examples(self) -> int:
        return len(self.rows)

    @property
    def delta(self) -> np.ndarray:
        return self.rewards_after - self.rewards_before

    @property
    def mean_abs_delta(self) -> float:
        return float(np.abs(self.delta).mean())

    @property
    def mean_delta(self) -> float:
        return float(self.delta.mean())

    @property
    def accuracy_change(self) -> float | None:
        if self.accuracy_before is None or self.accuracy_after is None:
            return None
        return self.accuracy_after - self.accuracy_before

    def to_dict(self, rewards: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_examples": self.n_examples,
            "mean_reward_before": float(self.rewards_before.mean()),
            "mean_reward_after": float(self.rewards_after.mean()),
            "mean_delta": self.mean_delta,
            "mean_abs_delta": self.mean_abs_delta,
            "n_pairs": self.n_pairs,
            "accuracy_before": self.accuracy_before,
            "accuracy_after": self.accuracy_after,
            "accuracy_change": self.accuracy_change,
            "n_flipped": self.n_flipped,
        }
        if rewards:
            out |= {
                "rows": self.rows.tolist(),
                "rewards_before": self.rewards_before.tolist(),
                "rewards_after": self.rewards_after.tolist(),
            }
        return out


@dataclass(frozen=True, eq=False)
class ShiftReport:
    """The effect of interventions on a target set, its complement, and all rows."""

    interventions: tuple[Intervention, ...]
    target: SetShift
    complement: SetShift
    overall: SetShift

    @property
    def selectivity(self) -> float | None:
        """``mean |delta r|`` on target / on complement; ``inf`` when only the target
        changed, None when neither did."""
        t, c = self.target.mean_abs_delta, self.complement.mean_abs_delta
        if c > ZERO_CHANGE:
            return t / c
        return math.inf if t > ZERO_CHANGE else None

    @property
    def selectivity_status(self) -> str:
        """``finite``, ``complement_unchanged`` (ratio is infinite) or ``unchanged``."""
        s = self.selectivity
        return "unchanged" if s is None else "complement_unchanged" if math.isinf(s) else "finite"

    def to_dict(self, rewards: bool = False) -> dict[str, Any]:
        """JSON-ready; ``selectivity`` is None unless finite (see ``selectivity_status``)."""
        s = self.selectivity
        return {
            "interventions": [i.to_dict() for i in self.interventions],
            "selectivity": s if s is not None and math.isfinite(s) else None,
            "selectivity_status": self.selectivity_status,
            "target": self.target.to_dict(rewards),
            "complement": self.complement.to_dict(rewards),
            "overall": self.overall.to_dict(rewards),
        }

    def to_metrics(self) -> dict[str, float]:
        """Flat finite numbers (what ``store.save_head(metrics=...)`` takes)."""
        out: dict[str, float] = {}
        s = self.selectivity
        if s is not None and math.isfinite(s):
            out["selectivity"] = s
        for part in (self.target, self.complement, self.overall):
            for key in ("mean_abs_delta", "mean_delta", "accuracy_before", "accuracy_after"):
                value = getattr(part, key)
                if value is not None:
                    out[f"{part.name}_{key}"] = float(value)
        return out

    def distribution_frame(self) -> pd.DataFrame:
        """Long frame ``set, stage, reward`` (target/complement x before/after), for plots."""
        parts = []
        for part in (self.target, self.complement):
            for stage, values in (("before", part.rewards_before), ("after", part.rewards_after)):
                parts.append(pd.DataFrame({"set": part.name, "stage": stage, "reward": values}))
        return pd.concat(parts, ignore_index=True)


def evaluate_shift(
    latents: SparseLatents,
    weight: np.ndarray,
    bias: float,
    interventions: Sequence[Intervention],
    target_rows: object,
    complement_rows: object,
    pair_index: PairIndex,
    *,
    base_rewards: np.ndarray | None = None,
) -> ShiftReport:
    """Rewards and pairwise accuracy on target and complement before and after.

    Rewards after come from the touched latent columns only
    (:func:`sarm.interventions.shifted_rewards`).
    """
    n = latents.n
    target = as_rows(target_rows, n, "target")
    complement = as_rows(complement_rows, n, "complement")
    _disjoint(target, complement)
    if pair_index.n_rows > n:
        raise ValueError(f"pair_index uses row {pair_index.n_rows - 1}; the latents have {n}")
    if base_rewards is None:
        before = latents.rewards(_weights(weight, latents.d_sae), bias)
    else:
        before = np.asarray(base_rewards, dtype=np.float64)
        if before.shape != (n,):
            raise ValueError(f"base_rewards must have shape ({n},), got {before.shape}")
    after = shifted_rewards(latents, weight, bias, interventions, before)
    correct = (pair_correct(before, pair_index), pair_correct(after, pair_index))
    sets = [
        SetShift.measure(name, rows, before, after, pair_index, correct)
        for name, rows in (
            ("target", target),
            ("complement", complement),
            ("overall", np.arange(n)),
        )
    ]
    return ShiftReport(tuple(interventions), *sets)


# ---------------------------------------------------------------- shift data


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


# ---------------------------------------------------------------- set specs

_FILTERS = ("subset", "role", "feature", "label")
_SOURCES = ("file", "demo")


@dataclass(frozen=True)
class SetSpec:
    """A parsed set spec: terms joined by ``&`` (all must hold).

    Terms: ``all``; ``rest`` (complement only: every loaded row not in the
    target); ``subset:[!]A,B``; ``role:[!]chosen,rejected,single``;
    ``feature:[!]ID,ID`` (rows where any of these features is active);
    ``label:TEXT`` (rows where a feature whose label or description contains
    TEXT is active); ``file:PATH`` and ``demo:train|test|all`` (the rows of that
    data, scored with the model). A spec without a source term reads the base
    (the store, or the ``data`` given to :func:`prepare_shift`).
    """

    text: str
    terms: tuple[tuple[str, bool, str], ...]  # (kind, negated, argument)

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError(f"set spec {self.text!r} has no terms")

    @classmethod
    def parse(cls, text: str) -> SetSpec:
        if not isinstance(text, str) or not text.strip():
            raise ValueError("a set spec must be a non-empty string like 'subset:refusal'")
        return cls(text.strip(), tuple(_parse_term(t.strip(), text) for t in text.split("&")))

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(arg for kind, _, arg in self.terms if kind == "source")

    @property
    def is_rest(self) -> bool:
        return any(kind == "rest" for kind, _, _ in self.terms)


def _parse_term(term: str, text: str) -> tuple[str, bool, str]:
    if term in ("all", "rest"):
        return term, False, ""
    prefix, colon, arg = term.partition(":")
    if not colon or not arg.strip():
        raise ValueError(
            f"set spec {text!r}: term {term!r} is not one of all, rest, subset:NAMES, "
            "role:ROLES, feature:IDS, label:TEXT, file:PATH, demo:train|test|all"
        )
    if prefix in _SOURCES:
        return "source", False, term if prefix == "demo" else arg.strip()
    if prefix not in _FILTERS:
        raise ValueError(f"set spec {text!r}: unknown term {prefix!r}; use one of {list(_FILTERS)}")
    negated = arg.startswith("!")
    if negated and prefix == "label":
        raise ValueError(f"set spec {text!r}: label terms cannot be negated")
    return prefix, negated, arg[1:].strip() if negated else arg.strip()


def _split(arg: str) -> list[str]:
    return [a.strip() for a in arg.split(",") if a.strip()]


def _feature_rows(data: ShiftData, ids: Sequence[int]) -> np.ndarray:
    hit = np.isin(data.latents.indices, np.asarray(ids, dtype=np.int64))
    out = np.zeros(data.n, dtype=bool)
    out[data.latents.row_ids()[hit]] = True
    return out


def _term_mask(
    data: ShiftData, kind: str, arg: str, target: np.ndarray | None, search: Callable | None
) -> np.ndarray:
    ex = data.examples
    if kind == "all":
        return np.ones(data.n, dtype=bool)
    if kind == "rest":
        if target is None:
            raise ValueError("'rest' is only allowed in the complement (it means: not the target)")
        return ~_mask(target, data.n)
    if kind == "source":
        return (ex["source"] == arg).to_numpy()
    if kind == "subset":
        return _known(ex["subset"], _split(arg), "subset")
    if kind == "role":
        return _known(ex["role"], _split(arg), "role", allowed=ROLES)
    if kind == "feature":
        return _feature_rows(data, [_feature_id(a, data.latents.d_sae) for a in _split(arg)])
    return _feature_rows(data, _label_features(arg, search))


def _known(column: pd.Series, names: list[str], what: str, allowed=None) -> np.ndarray:
    present = set(column.unique()) if allowed is None else set(allowed)
    unknown = [n for n in names if n not in present]
    if unknown or not names:
        known = "use one of" if allowed is not None else "the data has"
        raise ValueError(f"unknown {what} {unknown or names}; {known} {sorted(present)}")
    return column.isin(names).to_numpy()


def _feature_id(text: str, d_sae: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"feature term: {text!r} is not a feature id") from None
    if not 0 <= value < d_sae:
        raise ValueError(f"feature term: id {value} is out of range 0..{d_sae - 1}")
    return value


def _label_features(text: str, search: Callable | None) -> list[int]:
    if search is None:
        raise ValueError(f"label:{text} needs a feature store with labels")
    ids = [int(f) for f in search(text)]
    if not ids:
        raise ValueError(f"label:{text}: no feature's label or description contains {text!r}")
    return ids


def select_rows(
    data: ShiftData,
    spec: SetSpec | str,
    *,
    target: np.ndarray | None = None,
    base: str | None = None,
    search_labels: Callable[[str], Sequence[int]] | None = None,
) -> np.ndarray:
    """Rows of ``data`` selected by ``spec``; a spec without a source term (and not
    ``rest``) is limited to the rows of ``base``."""
    spec = SetSpec.parse(spec) if isinstance(spec, str) else spec
    mask = np.ones(data.n, dtype=bool)
    for kind, negated, arg in spec.terms:
        term = _term_mask(data, kind, arg, target, search_labels)
        mask &= ~term if negated else term
    if not spec.sources and not spec.is_rest:
        if base is None:
            raise ValueError(
                f"set spec {spec.text!r} filters a base dataset: give a feature store or data"
            )
        mask &= (data.examples["source"] == base).to_numpy()
    rows = np.flatnonzero(mask)
    if not len(rows):
        raise ValueError(f"set spec {spec.text!r} selects no examples")
    return rows


# ------------------------------------------------------------------ workflow


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
            self.data.latents, self.target, self.complement, weight=self.data.weight,
            roles=self.data.examples["role"].to_numpy(), labels=self.labels, limit=limit,
            **kwargs,
        )  # fmt: skip

    def evaluate(self, interventions: Sequence[Intervention]) -> ShiftReport:
        """:func:`evaluate_shift` on this target and complement (milliseconds)."""
        return evaluate_shift(
            self.data.latents, self.data.weight, self.data.bias, interventions,
            self.target, self.complement, self.data.pair_index, base_rewards=self.base_rewards,
        )  # fmt: skip

    def head(self, interventions: Sequence[Intervention]) -> tuple[np.ndarray, float]:
        """The proposed head ``(weights float32, bias)`` (see :func:`fold_into_head`)."""
        return fold_into_head(self.data.weight, interventions).astype(np.float32), self.data.bias


def _store_part(store: FeatureStore, model: Any | None) -> ShiftData:
    if model is None:
        return ShiftData.from_store(store)
    store.check_model(model.fingerprint())
    head = model.head
    return ShiftData.from_store(store, head.weight.numpy(), head.bias)


def _scored_part(source: str, model: Any | None, batch_size: int, progress: bool) -> ShiftData:
    from sarm.data import resolve_data
    from sarm.scoring import score_groups

    if model is None:
        raise ValueError(f"data source {source!r} needs a model to score it")
    loaded = resolve_data(source)
    if loaded.n_skipped:
        logger.warning("%s: %d malformed rows skipped", source, loaded.n_skipped)
    scored = score_groups(model, loaded.groups, batch_size=batch_size, progress=progress)
    head = model.head
    return ShiftData.from_scored(scored, loaded.groups, head.weight.numpy(), head.bias, source)


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
