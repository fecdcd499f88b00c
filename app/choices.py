"""What the pages' widgets offer and pre-select: options, filters and defaults (no Streamlit)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from app.charts import feature_name
from feature_store.queries import FEATURE_ORDERS
from sarm.evaluate import NO_SUBSET
from sarm.interventions import ACTIONS

MAX_OPTIONS = 500  # entries of a select box over examples or pairs
TOP_FEATURES = 50  # features offered by a "Feature" select box

# ------------------------------------------------------------------ features


def feature_options(table: pd.DataFrame, n: int = TOP_FEATURES) -> dict[int, str]:
    """The top ``n`` features of a contributions or pair-deltas table and their option labels.

    A label is the feature's name and its contribution (or margin delta).
    """
    top = table.head(n)
    value_col = "delta" if "delta" in table else "contribution"
    return {
        int(f): f"{feature_name(int(f), {int(f): label or ''}, 40)}  ({v:+.4f})"
        for f, label, v in zip(
            top["feature_id"], top["label"].fillna(""), top[value_col], strict=True
        )
    }


def top_features(table: pd.DataFrame, n: int = TOP_FEATURES) -> list[int]:
    """The first ``n`` feature ids of ``table``."""
    return table["feature_id"].head(n).astype(int).tolist()


FEATURE_SHOWN = {"all": None, "labelled": True, "unlabelled": False}


def feature_orders() -> list[str]:
    """The Features table's sort keys, by |mean contribution| first."""
    return ["abs_contribution", *[o for o in FEATURE_ORDERS if o != "abs_contribution"]]


def feature_filters(search: str, min_frequency: float, shown: str) -> dict:
    """``FeatureStore.features`` filters from the Features page's widgets (None: no filter)."""
    return {
        "search": search.strip() or None,
        "min_frequency": min_frequency or None,
        "labelled": FEATURE_SHOWN[shown],
    }


def explained_features(
    shown: pd.DataFrame, contains: str, source: str, min_score: float
) -> list[int] | None:
    """Features whose shown explanation contains ``contains`` (any case), comes from
    ``source`` (``any``, ``label``, ``stats``, ``llm``, ``human``) and scores at least
    ``min_score``; None when no explanation filter is set."""
    if not contains.strip() and source == "any" and min_score <= 0:
        return None
    keep = pd.Series(True, index=shown.index)
    if contains.strip():
        keep &= shown["text"].str.contains(contains.strip(), case=False, regex=False)
    if source != "any":
        keep &= shown["source"].str.split(":").str[0] == source
    if min_score > 0:
        keep &= shown["score"].fillna(-1.0) >= min_score
    return sorted(int(f) for f in shown.loc[keep, "feature"])


EXPLAINED_BY = ("any", "label", "stats", "llm", "human")
EXPLANATION_ORDER = "explanation_score"  # a sort key of the Features page (not a SQL order)


def by_explanation_score(ids: Sequence[int], shown: pd.DataFrame, descending: bool) -> list[int]:
    """``ids`` ordered by their shown explanation's score; unscored last, ties by id."""
    score = dict(zip(shown["feature"].astype(int), shown["score"], strict=True))
    sign = -1.0 if descending else 1.0

    def key(fid: int) -> tuple[int, float, int]:
        value = score.get(int(fid))
        missing = value is None or value != value
        return (int(missing), 0.0 if missing else sign * float(value), int(fid))

    return sorted((int(f) for f in ids), key=key)


def page_count(total: int, page_size: int) -> int:
    """Pages of ``page_size`` rows needed for ``total`` rows (at least one)."""
    return max(1, -(-total // page_size))


def highlight_scale(activations: Iterable[float]) -> float:
    """One colour scale for a feature's top examples: their largest |activation|."""
    return max(float(np.abs(np.asarray(list(activations), dtype=float)).max()), 1e-9)


# ------------------------------------------------------------------ examples and pairs


def reward_bounds(rewards: np.ndarray) -> tuple[float, float]:
    """The reward-range slider's ends: the rewards' range widened to whole hundredths."""
    lo = math.floor(float(rewards.min()) * 100) / 100
    hi = math.ceil(float(rewards.max()) * 100) / 100
    return (lo, lo + 0.01) if hi <= lo else (lo, hi)


def example_options(
    example_ids: Sequence[int], asked: int | None = None, limit: int = MAX_OPTIONS
) -> list[int]:
    """The first ``limit`` example ids, and ``asked`` in front when it is further down."""
    options = [int(e) for e in list(example_ids)[:limit]]
    if asked is not None and asked not in options and asked in set(map(int, example_ids)):
        options.insert(0, int(asked))
    return options


def find_pair(table: pd.DataFrame, ids: tuple[int, int] | None) -> int | None:
    """The ``pair`` number of ``(chosen_id, rejected_id)`` in a pair table (None: absent)."""
    if ids is None:
        return None
    hit = table[(table["chosen_id"] == ids[0]) & (table["rejected_id"] == ids[1])]
    return int(hit["pair"].iloc[0]) if len(hit) else None


def pair_options(
    table: pd.DataFrame,
    shown: pd.DataFrame,
    wanted: tuple[int, int] | None,
    limit: int = MAX_OPTIONS,
) -> tuple[list[int], int | None]:
    """The pairs to offer and the wanted pair's number (None when it is not in ``table``).

    The offer is the first ``limit`` of ``shown``, with the wanted pair put in
    front when the filters hide it, so a pair opened from another page shows.
    """
    options = shown["pair"].head(limit).astype(int).tolist()
    pair = find_pair(table, wanted)
    if pair is not None and pair not in options:
        options.insert(0, pair)
    return options, pair


# ------------------------------------------------------------------ head editor


def base_versions(names: Sequence[str], current: str) -> list[str]:
    """The saved head versions to offer as the base, with the current one always among them."""
    out = list(names) or [current]
    if current not in out:
        out.insert(0, current)
    return out


def editor_features(listed: Sequence[int], changed: Iterable[int]) -> list[int]:
    """The editor's features: the listed ones, then any other changed one; no repeats."""
    return list(dict.fromkeys([*listed, *changed]))


def weight_scale(weights: np.ndarray) -> float:
    """A typical weight size for the sliders' ranges: the largest |weight| (1 if all are 0)."""
    return float(np.abs(weights).max()) or 1.0


# ------------------------------------------------------------------ preference shift

SPEC_HELP = (
    "Terms joined by '&', all of which must hold: subset:A,B · subset:!A · role:chosen · "
    "feature:12,40 · label:TEXT · all; the complement also takes rest. "
    "See docs/preference_shift.md."
)
DIRECTION_NAMES = {
    "target": "stronger on the target",
    "complement": "stronger on the complement",
    "both": "either",
}
ACTION_NAMES = {
    "scale": "scale: w \u2190 v\u00b7w",
    "set": "set: w \u2190 v",
    "add": "add: w \u2190 w + v",
    "zero": "zero: w \u2190 0",
    "act_mul": "act_mul: z \u2190 v\u00b7z where active",
    "act_add": "act_add: z \u2190 z + v where active",
}
ACTION_CHOICES = [a for a in ACTION_NAMES if a in ACTIONS]  # scale first: the default
SELECTED_FEATURES = 5  # features a new ranking pre-selects


def default_target(subsets: Sequence[str]) -> list[str]:
    """A first target: the first named subset, when there are two subsets or more."""
    named = [s for s in subsets if s != NO_SUBSET]
    return named[:1] if len(subsets) >= 2 else []


def set_widgets(
    spec: str, subsets: Sequence[str], roles: Sequence[str], rest: bool = False
) -> tuple[str, list[str], list[str]]:
    """How a set spec from a link is shown: ``("build", subsets, roles)`` when it only names
    known subsets and roles (``subset:a,b & role:chosen``), ``("rest", [], [])`` for the
    complement's ``rest``, else ``("typed", [], [])`` (the spec is typed as it is)."""
    text = spec.strip()
    if rest and text == "rest":
        return "rest", [], []
    known = {"subset": list(subsets), "role": list(roles)}
    chosen: dict[str, list[str]] = {}
    for term in text.split("&"):
        kind, _, names = term.strip().partition(":")
        values = [n.strip() for n in names.split(",")]
        if kind not in known or kind in chosen or not all(v in known[kind] for v in values):
            return "typed", [], []
        chosen[kind] = list(dict.fromkeys(values))
    return "build", chosen.get("subset", []), chosen.get("role", [])


def shift_key(
    target: str,
    complement: str,
    base: str,
    overrides: Mapping[int, float],
    label_revision: int,
) -> tuple:
    """The cache key of a shift: its sets, the head, and the labels' revision if a set reads them."""
    uses_labels = "label:" in target or "label:" in complement
    return (
        target,
        complement,
        base,
        tuple(overrides.items()),
        label_revision if uses_labels else 0,
    )


def selected_features(
    options: Sequence[int],
    previous: Sequence[int] | None,
    same_ranking: bool,
    n: int = SELECTED_FEATURES,
) -> list[int]:
    """The features to change: a new ranking's top ``n``; of the same one, the previous choice."""
    if previous is None or not same_ranking:
        return list(options[:n])
    return [f for f in previous if f in options]
