"""Set specs: parse ``subset:A & role:chosen``-style terms and select the rows they name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sarm.shift.data import ShiftData
from sarm.shift.rows import _mask
from sarm.types import ROLES

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
    out[data.latents.row_ids[hit]] = True
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
