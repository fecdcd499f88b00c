"""Evaluation metrics from rewards: pairwise, per-subset, best-of-N and RM-Bench.

Everything runs on a :class:`PairIndex`, a set of integer arrays that say, for
every (chosen, rejected) comparison, which positions of a reward vector to
compare. After a head edit the dashboard recomputes all metrics for 100,000
pairs with a few numpy gathers and ``bincount`` calls.

Conventions:

- a comparison is correct when ``r(chosen) > r(rejected)`` **strictly**: a tie
  counts as wrong (a reward model that cannot separate the two has not chosen);
- ``pair`` and ``best_of_n`` groups contribute every chosen x rejected
  comparison; ``rmbench`` groups their 3 x 3; ``single`` groups none;
- best-of-N: a group is correct when every chosen beats every rejected (with one
  chosen: it beats all the rejected). For a one-to-one pair this is pairwise;
- RM-Bench (Liu et al., 2024): responses are ordered [concise, detailed,
  markdown] for both chosen (``i``) and rejected (``j``). Cell ``(i, j)`` is the
  accuracy of chosen ``i`` against rejected ``j`` over prompts. ``hard`` is the
  mean of the cells ``i < j`` (chosen plainer than rejected), ``normal`` of the
  diagonal, ``easy`` of ``i > j``, and ``total`` of all nine cells;
- intervals: a 95% percentile bootstrap over groups (prompts), seeded, see
  :func:`bootstrap_interval`; breakdowns by any per-group label (``source``,
  ``category``) come from :func:`accuracy_by`;
- length baselines: "shorter wins" / "longer wins" score a response by minus /
  plus its length in characters (:func:`length_rewards`); ties count as wrong.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sarm.constants import NO_SUBSET
from sarm.types import GROUP_KINDS, PreferenceGroup

__all__ = [
    "CI_LEVEL",
    "DIFFICULTIES",
    "LENGTH_BASELINES",
    "NO_SUBSET",
    "RMBENCH_STYLES",
    "EvalReport",
    "PairIndex",
    "accuracy_by",
    "accuracy_interval",
    "best_of_n_accuracy",
    "bootstrap_interval",
    "evaluate",
    "evaluate_arrays",
    "flipped_pairs",
    "length_rewards",
    "pair_correct",
    "pair_margins",
    "pairwise_accuracy",
    "per_subset_accuracy",
    "prompt_clusters",
    "relabel_groups",
    "rmbench_accuracy",
    "rmbench_matrix",
    "subset_names",
]

DIFFICULTIES: tuple[str, ...] = ("easy", "normal", "hard")
LENGTH_BASELINES: dict[str, bool] = {"shorter_wins": False, "longer_wins": True}
_DRAWS_PER_CHUNK = 2_000_000  # bootstrap indices drawn at once (16 MB)
RMBENCH_STYLES: tuple[str, ...] = ("concise", "detailed", "markdown")
RowKey = tuple[str, str, int]
RowOf = Callable[[str, str, int], int] | Mapping[RowKey, int]
_KIND_CODE = {kind: code for code, kind in enumerate(GROUP_KINDS)}
_RMBENCH = _KIND_CODE["rmbench"]


def _difficulty(kind: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """easy (0) / normal (1) / hard (2) for rmbench pairs, -1 for the others."""
    code = np.where(i > j, 0, np.where(i == j, 1, 2)).astype(np.int8)
    return np.where(kind == _RMBENCH, code, -1).astype(np.int8)


def _int_array(name: str, value: object, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"PairIndex.{name} must be a 1-D integer array, got {arr.dtype} {arr.shape}"
        )
    if n is not None and len(arr) != n:
        raise ValueError(f"PairIndex.{name} has {len(arr)} entries, expected {n} (one per pair)")
    out = np.array(arr, dtype=np.int64)
    out.flags.writeable = False
    return out


def _check_range(name: str, arr: np.ndarray, low: int, high: int | None) -> None:
    if len(arr) and (arr.min() < low or (high is not None and arr.max() >= high)):
        bound = f"[{low}, {high})" if high is not None else f">= {low}"
        raise ValueError(
            f"PairIndex.{name} values must be in {bound}, got {arr.min()}..{arr.max()}"
        )


@dataclass(eq=False)
class PairIndex:
    """Integer arrays describing every comparison; one entry per (chosen, rejected) pair.

    ``chosen_row``/``rejected_row`` index a reward vector; ``group`` codes the
    group (into ``group_ids``); ``subset`` codes into ``subset_names``; ``kind``
    into :data:`sarm.types.GROUP_KINDS`; ``chosen_index``/``rejected_index`` are
    positions within the group (the RM-Bench styles). ``difficulty`` is derived:
    0 easy, 1 normal, 2 hard for rmbench pairs, -1 otherwise.
    """

    chosen_row: np.ndarray
    rejected_row: np.ndarray
    group: np.ndarray
    subset: np.ndarray
    subset_names: tuple[str, ...]
    kind: np.ndarray
    chosen_index: np.ndarray
    rejected_index: np.ndarray
    group_ids: tuple[str, ...]
    difficulty: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.chosen_row = _int_array("chosen_row", self.chosen_row)
        n = len(self.chosen_row)
        for name in ("rejected_row", "group", "subset", "kind", "chosen_index", "rejected_index"):
            setattr(self, name, _int_array(name, getattr(self, name), n))
        self.subset_names, self.group_ids = tuple(self.subset_names), tuple(self.group_ids)
        self._check_codes()
        self.difficulty = _difficulty(self.kind, self.chosen_index, self.rejected_index)
        self.difficulty.flags.writeable = False

    def _check_codes(self) -> None:
        for name in ("chosen_row", "rejected_row", "chosen_index", "rejected_index"):
            _check_range(name, getattr(self, name), 0, None)
        _check_range("group", self.group, 0, len(self.group_ids))
        _check_range("subset", self.subset, 0, len(self.subset_names))
        _check_range("kind", self.kind, 0, len(GROUP_KINDS))
        rm = self.kind == _RMBENCH
        if rm.any() and max(self.chosen_index[rm].max(), self.rejected_index[rm].max()) >= 3:
            raise ValueError("PairIndex: rmbench pairs need chosen/rejected index in 0..2")

    @property
    def n_pairs(self) -> int:
        return len(self.chosen_row)

    @property
    def n_rows(self) -> int:
        """The shortest reward vector this index can be applied to."""
        if not self.n_pairs:
            return 0
        return int(max(self.chosen_row.max(), self.rejected_row.max())) + 1

    @classmethod
    def from_arrays(
        cls,
        chosen_row: Sequence[int] | np.ndarray,
        rejected_row: Sequence[int] | np.ndarray,
        *,
        group: Sequence[int] | np.ndarray | None = None,
        subset: Sequence[int] | np.ndarray | None = None,
        subset_names: Sequence[str] | None = None,
        kind: Sequence[int] | np.ndarray | str = "pair",
        chosen_index: Sequence[int] | np.ndarray | None = None,
        rejected_index: Sequence[int] | np.ndarray | None = None,
        group_ids: Sequence[str] | None = None,
    ) -> PairIndex:
        """Build from plain arrays; omitted columns default to one group per pair,
        one subset named :data:`NO_SUBSET`, kind ``pair`` and index 0."""
        n = len(chosen_row)
        group = np.arange(n) if group is None else np.asarray(group)
        if group_ids is None:
            group_ids = [str(g) for g in range(int(group.max()) + 1 if len(group) else 0)]
        if subset is None:
            subset, subset_names = np.zeros(n, dtype=np.int64), subset_names or (NO_SUBSET,)
        elif subset_names is None:
            subset_names = [str(s) for s in range(int(np.max(subset)) + 1 if n else 0)]
        if isinstance(kind, str):
            if kind not in _KIND_CODE:
                raise ValueError(f"kind must be one of {list(GROUP_KINDS)}, got {kind!r}")
            kind = np.full(n, _KIND_CODE[kind], dtype=np.int64)
        zeros = np.zeros(n, dtype=np.int64)
        return cls(
            chosen_row=chosen_row,
            rejected_row=rejected_row,
            group=group,
            subset=subset,
            subset_names=tuple(subset_names),
            kind=kind,
            chosen_index=zeros if chosen_index is None else chosen_index,
            rejected_index=zeros if rejected_index is None else rejected_index,
            group_ids=tuple(group_ids),
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> PairIndex:
        """Every (chosen, rejected) comparison of an examples frame (the one constructor).

        ``frame`` has one row per response with ``group_index, group_id, role,
        response_index, kind`` and optionally ``subset`` (missing or empty: the
        subset :data:`NO_SUBSET`) and ``row`` (the response's position in the
        reward vectors the index is applied to; default: its position in the
        frame). Groups are numbered in ``group_index`` order and named by their
        first ``group_id``; ``single`` groups count as groups but give no pairs.
        Pairs come group by group, then chosen index, then rejected index.
        """
        f = _checked_frame(frame)
        _, group = np.unique(f["group_index"].to_numpy(), return_inverse=True)
        first = np.unique(group, return_index=True)[1]
        subsets = subset_names(f)
        names = sorted(set(subsets))
        rows = f["row"].to_numpy(np.int64) if "row" in f else np.arange(len(f), dtype=np.int64)
        cols = pd.DataFrame(
            {
                "row": rows,
                "group": group,
                "role": f["role"].to_numpy(),
                "index": f["response_index"].to_numpy(np.int64),
                "kind": f["kind"].map(_KIND_CODE).to_numpy(np.int64),
                "subset": subsets.map({n: i for i, n in enumerate(names)}).to_numpy(np.int64),
            }
        )
        cols = cols[cols["kind"] != _KIND_CODE["single"]]
        chosen, rejected = cols[cols["role"] == "chosen"], cols[cols["role"] == "rejected"]
        pairs = chosen.merge(rejected, on="group", suffixes=("_c", "_r"))
        pairs = pairs.sort_values(["group", "index_c", "index_r"], kind="stable")
        return cls(
            chosen_row=pairs["row_c"].to_numpy(np.int64),
            rejected_row=pairs["row_r"].to_numpy(np.int64),
            group=pairs["group"].to_numpy(np.int64),
            subset=pairs["subset_c"].to_numpy(np.int64),
            subset_names=tuple(names),
            kind=pairs["kind_c"].to_numpy(np.int64),
            chosen_index=pairs["index_c"].to_numpy(np.int64),
            rejected_index=pairs["index_r"].to_numpy(np.int64),
            group_ids=tuple(str(g) for g in f["group_id"].to_numpy()[first]),
        )

    @classmethod
    def from_groups(cls, groups: Sequence[PreferenceGroup], row_of: RowOf) -> PairIndex:
        """:meth:`from_frame` on ``groups``, with reward rows from ``row_of``.

        ``row_of`` maps ``(group_id, role, index)`` to the response's position in
        the reward vector, as a mapping or a callable; ``single`` groups need none.
        """
        lookup = _row_lookup(row_of)
        _check_unique_ids(groups)
        return cls.from_frame(pd.DataFrame(_group_rows(groups, lookup), columns=_GROUP_COLUMNS))


FRAME_COLUMNS = ("group_index", "group_id", "role", "response_index", "kind")
_GROUP_COLUMNS = (*FRAME_COLUMNS, "subset", "row")


def subset_names(frame: pd.DataFrame) -> pd.Series:
    """The ``subset`` column with missing or empty subsets named :data:`NO_SUBSET`."""
    if "subset" not in frame:
        return pd.Series(NO_SUBSET, index=frame.index, dtype=object)
    sub = frame["subset"].astype(object).where(frame["subset"].notna(), None)
    return sub.map(lambda s: s if isinstance(s, str) and s else NO_SUBSET)


def _checked_frame(frame: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in FRAME_COLUMNS if c not in frame]
    if missing:
        raise ValueError(f"examples frame lacks columns {missing}; use store.examples_frame()")
    bad = sorted(set(frame["kind"]) - set(GROUP_KINDS))
    if bad:
        raise ValueError(f"examples frame has unknown kinds {bad}; allowed: {list(GROUP_KINDS)}")
    return frame.reset_index(drop=True)


def _group_rows(groups: Sequence[PreferenceGroup], lookup) -> list[tuple]:
    """One frame row per response (a placeholder row for a ``single`` group)."""
    rows = []
    for code, g in enumerate(groups):
        if g.kind == "single":
            rows.append((code, g.group_id, "single", 0, g.kind, g.subset, -1))
            continue
        for role, i, _ in g.responses():
            rows.append((code, g.group_id, role, i, g.kind, g.subset, lookup(g.group_id, role, i)))
    return rows


def _row_lookup(row_of: RowOf) -> Callable[[str, str, int], int]:
    def lookup(group_id: str, role: str, index: int) -> int:
        key = (group_id, role, index)
        try:
            row = row_of[key] if isinstance(row_of, Mapping) else row_of(*key)
        except KeyError:
            raise ValueError(f"no reward row for response {key}") from None
        try:
            row = operator.index(row)
        except TypeError:
            raise ValueError(f"row for response {key} must be an integer, got {row!r}") from None
        if row < 0:
            raise ValueError(f"row for response {key} is negative ({row})")
        return row

    return lookup


def _check_unique_ids(groups: Sequence[PreferenceGroup]) -> None:
    seen: set[str] = set()
    for g in groups:
        if g.group_id in seen:
            raise ValueError(f"duplicate group_id {g.group_id!r}: rewards are keyed by group id")
        seen.add(g.group_id)


# ------------------------------------------------------------------- metrics


def _gather(rewards: np.ndarray, index: PairIndex) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.asarray(rewards)
    real = np.issubdtype(rewards.dtype, np.number) and rewards.dtype.kind != "c"
    if rewards.ndim != 1 or not real:
        raise ValueError(
            f"rewards must be a 1-D array of real numbers, got {rewards.dtype} {rewards.shape}"
        )
    if len(rewards) < index.n_rows:
        raise ValueError(
            f"rewards has {len(rewards)} entries but the index uses row {index.n_rows - 1}"
        )
    if not np.issubdtype(rewards.dtype, np.floating):  # margins of integers must not wrap
        rewards = rewards.astype(np.float64)
    chosen, rejected = rewards[index.chosen_row], rewards[index.rejected_row]
    if np.isfinite(chosen).all() and np.isfinite(rejected).all():
        return chosen, rejected
    bad = ~(np.isfinite(chosen) & np.isfinite(rejected))
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} pairs have a non-finite reward (first: pair {int(np.argmax(bad))})"
        )
    return chosen, rejected


def pair_margins(rewards: np.ndarray, index: PairIndex) -> np.ndarray:
    """``r(chosen) - r(rejected)`` for every pair."""
    chosen, rejected = _gather(rewards, index)
    return chosen - rejected


def pair_correct(rewards: np.ndarray, index: PairIndex) -> np.ndarray:
    """Boolean per pair: ``r(chosen) > r(rejected)`` (strict, so ties are wrong)."""
    return _correct(pair_margins(rewards, index))


def _correct(margins: np.ndarray) -> np.ndarray:
    """``margin > 0``: for finite rewards ``a - b > 0`` exactly when ``a > b`` (IEEE
    subtraction of distinct finite floats is never 0; an overflow gives +-inf)."""
    return margins > 0


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if len(values) else math.nan


def pairwise_accuracy(rewards: np.ndarray, index: PairIndex) -> float:
    """Fraction of pairs with ``r(chosen) > r(rejected)``; ties count as wrong; NaN if no pairs."""
    return _mean(pair_correct(rewards, index))


def _subset_table(correct: np.ndarray, index: PairIndex) -> dict[str, tuple[float, int]]:
    size = len(index.subset_names)
    hits = np.bincount(index.subset, weights=correct, minlength=size)
    counts = np.bincount(index.subset, minlength=size)
    return {
        name: (float(hits[k] / counts[k]), int(counts[k]))
        for k, name in enumerate(index.subset_names)
        if counts[k]
    }


def per_subset_accuracy(rewards: np.ndarray, index: PairIndex) -> dict[str, float]:
    """Pairwise accuracy per subset (subsets with at least one pair)."""
    return {k: acc for k, (acc, _) in _subset_table(pair_correct(rewards, index), index).items()}


def _group_all_correct(correct: np.ndarray, index: PairIndex, mask: np.ndarray) -> np.ndarray:
    size = len(index.group_ids)
    wrong = np.bincount(index.group[mask], weights=~correct[mask], minlength=size)
    present = np.bincount(index.group[mask], minlength=size) > 0
    return wrong[present] == 0


def best_of_n_accuracy(
    rewards: np.ndarray, index: PairIndex, *, kind: str | None = "best_of_n"
) -> float:
    """Fraction of groups whose every chosen beats every rejected (strictly).

    Only groups of ``kind`` count (``None``: every group with a comparison);
    NaN when there are none.
    """
    correct = pair_correct(rewards, index)
    if kind is None:
        mask = np.ones(index.n_pairs, dtype=bool)
    elif kind in _KIND_CODE:
        mask = index.kind == _KIND_CODE[kind]
    else:
        raise ValueError(f"kind must be one of {list(GROUP_KINDS)} or None, got {kind!r}")
    return _mean(_group_all_correct(correct, index, mask))


def _rmbench_cells(correct: np.ndarray, index: PairIndex) -> np.ndarray:
    rm = index.kind == _RMBENCH
    cell = index.chosen_index[rm] * 3 + index.rejected_index[rm]
    hits = np.bincount(cell, weights=correct[rm], minlength=9)
    counts = np.bincount(cell, minlength=9)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (hits / counts).reshape(3, 3)


def rmbench_matrix(rewards: np.ndarray, index: PairIndex) -> np.ndarray:
    """3 x 3 accuracy of chosen style ``i`` vs rejected style ``j`` (NaN where empty)."""
    return _rmbench_cells(pair_correct(rewards, index), index)


def _rmbench_summary(matrix: np.ndarray) -> dict[str, float]:
    upper, lower = np.triu_indices(3, 1), np.tril_indices(3, -1)
    return {
        "easy": float(matrix[lower].mean()),
        "normal": float(np.diag(matrix).mean()),
        "hard": float(matrix[upper].mean()),
        "total": float(matrix.mean()),
    }


def rmbench_accuracy(rewards: np.ndarray, index: PairIndex) -> dict[str, float] | None:
    """RM-Bench ``{easy, normal, hard, total}`` from the 3 x 3 matrix; None without rmbench pairs."""
    if not (index.kind == _RMBENCH).any():
        return None
    return _rmbench_summary(rmbench_matrix(rewards, index))


def flipped_pairs(
    rewards_before: np.ndarray, rewards_after: np.ndarray, index: PairIndex
) -> np.ndarray:
    """Positions (into the index) of pairs whose correctness changed between two reward vectors."""
    return np.flatnonzero(pair_correct(rewards_before, index) != pair_correct(rewards_after, index))


# ------------------------------------------------------ intervals, breakdowns


def _pair_mask(index: PairIndex, pairs: np.ndarray | None) -> np.ndarray:
    if pairs is None:
        return np.ones(index.n_pairs, dtype=bool)
    mask = np.asarray(pairs)
    if mask.dtype != bool or mask.shape != (index.n_pairs,):
        raise ValueError(
            f"pairs must be a boolean mask with one entry per pair ({index.n_pairs}), "
            f"got {mask.dtype} {mask.shape}"
        )
    return mask


def _check_bootstrap(n_resamples: int, level: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _per_unit(correct: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correct pairs and pairs per unit (units with a pair, in ascending code)."""
    _, inverse = np.unique(unit, return_inverse=True)
    return np.bincount(inverse, weights=correct), np.bincount(inverse).astype(np.float64)


def _units(index: PairIndex, clusters: Sequence[int] | np.ndarray | None) -> np.ndarray:
    """The resampled unit of every pair: its group, or its group's cluster."""
    if clusters is None:
        return index.group
    codes = np.asarray(clusters)
    if codes.shape != (len(index.group_ids),) or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(
            f"clusters must hold one integer per group ({len(index.group_ids)}), "
            f"got {codes.dtype} {codes.shape}"
        )
    return codes[index.group]


def prompt_clusters(groups: Sequence[PreferenceGroup]) -> np.ndarray:
    """One code per group, equal for groups with the same prompt (the bootstrap's units)."""
    codes: dict[tuple, int] = {}
    keys = [tuple((m["role"], m["content"]) for m in g.prompt) for g in groups]
    return np.array([codes.setdefault(k, len(codes)) for k in keys], dtype=np.int64)


def _bootstrap(
    hits: np.ndarray, counts: np.ndarray, n_resamples: int, seed: int, level: float
) -> tuple[float, float]:
    n = len(hits)
    rng = np.random.default_rng(seed)
    accuracies = np.empty(n_resamples)
    chunk = max(1, _DRAWS_PER_CHUNK // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        draw = rng.integers(0, n, size=(size, n))  # the same stream as `size` draws of n
        accuracies[start : start + size] = hits[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.quantile(accuracies, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def bootstrap_interval(
    rewards: np.ndarray,
    index: PairIndex,
    *,
    pairs: np.ndarray | None = None,
    clusters: Sequence[int] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of pairwise accuracy, resampling prompts.

    The units resampled are the groups, or with ``clusters`` (one integer per
    group, e.g. :func:`prompt_clusters`) the clusters, so that rows sharing a
    prompt are drawn together. The units with a pair in ``pairs`` (a boolean
    mask; default: every pair) are numbered ``0..U-1`` in ascending code.
    Resample ``b`` is the ``b``-th draw of ``rng.integers(0, U, size=U)`` from
    ``np.random.default_rng(seed)``; its accuracy is the drawn units' correct
    pairs over their pairs (ties wrong). The interval is the ``(1 - level) / 2``
    and ``(1 + level) / 2`` quantiles (``np.quantile``, linear) of the resampled
    accuracies. None when there is no pair.
    """
    summary = accuracy_interval(
        rewards,
        index,
        pairs=pairs,
        clusters=clusters,
        n_resamples=n_resamples,
        seed=seed,
        level=level,
    )
    return None if summary is None else tuple(summary["ci95"])


CI_LEVEL = 0.95


def _summary(
    correct: np.ndarray, unit: np.ndarray, n_resamples: int, seed: int, level: float = CI_LEVEL
) -> dict[str, object]:
    hits, counts = _per_unit(correct, unit)
    return {
        "accuracy": float(correct.mean()),
        "n_pairs": len(correct),
        "n_prompts": len(hits),
        "ci95": list(_bootstrap(hits, counts, n_resamples, seed, level)),
    }


def accuracy_interval(
    rewards: np.ndarray,
    index: PairIndex,
    *,
    pairs: np.ndarray | None = None,
    clusters: Sequence[int] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = CI_LEVEL,
) -> dict[str, object] | None:
    """``{accuracy, n_pairs, n_prompts, ci95: [low, high]}`` over ``pairs``; None without pairs.

    ``n_prompts`` counts the resampled units with a pair (the groups, or the
    ``clusters``); ``ci95`` is :func:`bootstrap_interval`.
    """
    _check_bootstrap(n_resamples, level)
    mask = _pair_mask(index, pairs)
    if not mask.any():
        return None
    correct = pair_correct(rewards, index)[mask]
    return _summary(correct, _units(index, clusters)[mask], n_resamples, seed, level)


def relabel_groups(index: PairIndex, labels: Sequence[str | None]) -> PairIndex:
    """``index`` with its subsets replaced by a label per group (``labels[group code]``).

    Missing or empty labels become :data:`NO_SUBSET`; subsets are named in sorted order.
    """
    if len(labels) != len(index.group_ids):
        raise ValueError(f"need one label per group ({len(index.group_ids)}), got {len(labels)}")
    named = [lab if isinstance(lab, str) and lab else NO_SUBSET for lab in labels]
    names = sorted(set(named))
    code = _codes(named, names)
    return PairIndex(
        chosen_row=index.chosen_row,
        rejected_row=index.rejected_row,
        group=index.group,
        subset=code[index.group] if index.n_pairs else np.zeros(0, dtype=np.int64),
        subset_names=tuple(names),
        kind=index.kind,
        chosen_index=index.chosen_index,
        rejected_index=index.rejected_index,
        group_ids=index.group_ids,
    )


def _codes(named: Sequence[str], names: Sequence[str]) -> np.ndarray:
    position = {name: k for k, name in enumerate(names)}
    return np.array([position[n] for n in named], dtype=np.int64)


def accuracy_by(
    rewards: np.ndarray,
    index: PairIndex,
    labels: Sequence[str | None],
    *,
    clusters: Sequence[int] | np.ndarray | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, object]]:
    """:func:`accuracy_interval` per label, with one label per group (e.g. its source).

    Labels without a pair are left out; missing labels are named :data:`NO_SUBSET`.
    """
    _check_bootstrap(n_resamples, CI_LEVEL)
    relabelled = relabel_groups(index, labels)
    correct = pair_correct(rewards, relabelled)
    unit = _units(index, clusters)
    out = {}
    for code, name in enumerate(relabelled.subset_names):
        mask = relabelled.subset == code
        if mask.any():
            out[name] = _summary(correct[mask], unit[mask], n_resamples, seed)
    return out


def accuracy_per_label(
    rewards: np.ndarray, index: PairIndex, labels: Sequence[str | None]
) -> dict[str, tuple[float, int]]:
    """``label -> (accuracy, n_pairs)`` with one label per group; no intervals (fast)."""
    relabelled = relabel_groups(index, labels)
    correct = pair_correct(rewards, relabelled)
    out = {}
    for code, name in enumerate(relabelled.subset_names):
        mask = relabelled.subset == code
        if mask.any():
            out[name] = (float(correct[mask].mean()), int(mask.sum()))
    return out


def macro_accuracy(rewards: np.ndarray, index: PairIndex, labels: Sequence[str | None]) -> float:
    """Pairwise accuracy averaged over labels (each label counts once, whatever its size)."""
    table = accuracy_per_label(rewards, index, labels)
    if not table:
        raise ValueError("macro_accuracy: no pairs")
    return float(np.mean([acc for acc, _ in table.values()]))


#: group meta fields that :func:`head_summary` reports per value
BREAKDOWNS = ("source", "category")


def _labels(groups: Sequence[PreferenceGroup], key: str) -> list[str | None]:
    return [None if g.meta.get(key) is None else str(g.meta[key]) for g in groups]


def head_summary(
    rewards: np.ndarray,
    index: PairIndex,
    groups: Sequence[PreferenceGroup],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """One head's pairwise accuracy with its interval, overall and per source / category.

    The bootstrap resamples prompts: groups that share a prompt are drawn together.
    ``category_macro`` is the unweighted mean over categories (so that the largest
    category does not dominate).
    """
    bootstrap = {"clusters": prompt_clusters(groups), "n_resamples": resamples, "seed": seed}
    out: dict[str, object] = {"all": accuracy_interval(rewards, index, **bootstrap)}
    for key in BREAKDOWNS:
        labels = _labels(groups, key)
        if any(label is not None for label in labels):
            out[f"per_{key}"] = accuracy_by(rewards, index, labels, **bootstrap)
    if out.get("per_category"):
        by_category = [row["accuracy"] for row in out["per_category"].values()]
        out["category_macro"] = float(np.mean(by_category))
    return out


def length_rewards(responses: Sequence[str], *, longer_wins: bool) -> np.ndarray:
    """The length baselines' rewards: plus (``longer_wins``) or minus the length in characters."""
    lengths = np.array([len(r) for r in responses], dtype=np.float64)
    return lengths if longer_wins else -lengths


# -------------------------------------------------------------------- report


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class EvalReport:
    """Metrics for one reward vector over one data set; ``to_dict`` is JSON-ready."""

    pairwise_accuracy: float | None
    n_pairs: int
    per_subset: dict[str, dict[str, float | int]]
    best_of_n_accuracy: float | None
    n_groups: int
    rmbench: dict[str, float] | None
    mean_margin: float | None

    def __post_init__(self) -> None:
        if self.n_pairs < 0 or self.n_groups < 0:
            raise ValueError("EvalReport counts must be non-negative")
        for name in ("pairwise_accuracy", "best_of_n_accuracy"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"EvalReport.{name} must be in [0, 1] or None, got {value}")
        if (self.pairwise_accuracy is None) != (self.n_pairs == 0):
            raise ValueError("EvalReport.pairwise_accuracy must be None exactly when n_pairs is 0")

    def to_dict(self) -> dict[str, object]:
        return {
            "pairwise_accuracy": self.pairwise_accuracy,
            "n_pairs": self.n_pairs,
            "per_subset": {k: dict(v) for k, v in self.per_subset.items()},
            "best_of_n_accuracy": self.best_of_n_accuracy,
            "n_groups": self.n_groups,
            "rmbench": dict(self.rmbench) if self.rmbench is not None else None,
            "mean_margin": self.mean_margin,
        }


def evaluate_arrays(
    rewards: np.ndarray, index: PairIndex, *, n_groups: int | None = None
) -> EvalReport:
    """All metrics from a reward vector and an index (the dashboard's fast path).

    ``n_groups`` defaults to the number of groups in the index (``single``
    groups included when the index was built from groups).
    """
    margins = pair_margins(rewards, index)
    correct = _correct(margins)
    bon_mask = index.kind == _KIND_CODE["best_of_n"]
    rm = (
        _rmbench_summary(_rmbench_cells(correct, index)) if (index.kind == _RMBENCH).any() else None
    )
    return EvalReport(
        pairwise_accuracy=_none_if_nan(_mean(correct)),
        n_pairs=index.n_pairs,
        per_subset={
            k: {"accuracy": a, "n_pairs": n} for k, (a, n) in _subset_table(correct, index).items()
        },
        best_of_n_accuracy=_none_if_nan(_mean(_group_all_correct(correct, index, bon_mask))),
        n_groups=len(index.group_ids) if n_groups is None else n_groups,
        rmbench=rm,
        mean_margin=_none_if_nan(_mean(margins)),
    )


def _reward_vector(
    groups: Sequence[PreferenceGroup], rewards_by_key: Mapping[RowKey, float]
) -> tuple[np.ndarray, dict[RowKey, int]]:
    rows: dict[RowKey, int] = {}
    values: list[float] = []
    for g in groups:
        for role, i, _ in g.responses():
            if role == "single":
                continue
            key = (g.group_id, role, i)
            if key not in rewards_by_key:
                raise ValueError(f"no reward for group {g.group_id!r} {role} response {i}")
            rows[key] = len(values)
            values.append(float(rewards_by_key[key]))
    return np.asarray(values, dtype=np.float64), rows


def evaluate(
    groups: Sequence[PreferenceGroup], rewards_by_key: Mapping[RowKey, float]
) -> EvalReport:
    """Metrics for ``groups`` given a reward per ``(group_id, role, index)``.

    Every compared response needs a reward (a missing one is a ValueError);
    ``single`` groups need none and only count in ``n_groups``.
    """
    rewards, rows = _reward_vector(groups, rewards_by_key)
    index = PairIndex.from_groups(groups, rows)
    return evaluate_arrays(rewards, index, n_groups=len(groups))
