"""Interventions on a SARM's reward: head-weight edits and latent steering.

A SARM's reward is ``r = sum_i w_i z_i + b`` over the pooled latents ``z``. An
:class:`Intervention` changes one of the two factors of ``w_i z_i`` for a set of
features:

- weight edits (``set``, ``scale``, ``add``, ``zero``) change ``w_i``;
- latent steering (``act_add``, ``act_mul``) changes ``z_i`` *where the feature
  is active* (the stored non-zeros of the TopK code). Steering never changes the
  support: a latent multiplied to 0 stays "active" for a later ``act_add``.

Order semantics (tested in ``tests/core/test_interventions.py``): a list of
interventions is applied in the order given, each to the weights (or latents) the
previous ones produced. Hence

- weight edits and steering commute (they act on different factors);
- actions on disjoint feature sets commute;
- on one feature, ``scale`` commutes with ``scale``, ``add`` with ``add``,
  ``act_mul`` with ``act_mul`` and ``act_add`` with ``act_add``; ``set``/``zero``
  discard everything before them; ``scale`` and ``add`` (and ``act_mul`` and
  ``act_add``) do not commute: ``scale:2`` then ``add:1`` gives ``2w + 1``,
  ``add:1`` then ``scale:2`` gives ``2w + 2``.

Spec strings: ``ACTION[:VALUE][@F1,F2,...]``, e.g. ``scale:0.0``, ``set:1.5@12``,
``zero@3,7``, ``act_mul:0.5``. ``zero`` takes no value; the other actions need one.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

import numpy as np

from sarm.head import rewards
from sarm.latents import SparseLatents

if TYPE_CHECKING:
    from sarm.model import Score

__all__ = [
    "ACTIONS",
    "ACTIVATION_ACTIONS",
    "WEIGHT_ACTIONS",
    "Intervention",
    "edit_weights",
    "fold_into_head",
    "parse_actions",
    "preview_score",
    "shifted_rewards",
    "steer_latents",
    "steer_values",
    "touched_features",
]

Action = Literal["set", "scale", "add", "zero", "act_add", "act_mul"]
ACTIONS: tuple[str, ...] = get_args(Action)
WEIGHT_ACTIONS = frozenset({"set", "scale", "add", "zero"})
ACTIVATION_ACTIONS = frozenset({"act_add", "act_mul"})
# A head is stored in float32: values and edited weights beyond this cannot be saved.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_features(features: object) -> tuple[int, ...]:
    if isinstance(features, str | bytes) or not isinstance(features, Iterable):
        raise ValueError(f"features must be a list of feature ids, got {features!r}")
    out = []
    for f in features:
        if isinstance(f, bool) or not isinstance(f, numbers.Integral) or int(f) < 0:
            raise ValueError(f"feature ids must be non-negative integers, got {f!r}")
        out.append(int(f))
    if not out:
        raise ValueError("an intervention needs at least one feature id")
    if len(set(out)) != len(out):
        raise ValueError(f"feature ids repeat in {out}; list each feature once")
    return tuple(out)


@dataclass(frozen=True)
class Intervention:
    """One action with one value on a set of features (see the module docs)."""

    action: Action
    features: tuple[int, ...]
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; use one of {list(ACTIONS)}")
        object.__setattr__(self, "features", _check_features(self.features))
        value = self.value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f"{self.action} value must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{self.action} value must be finite, got {value}")
        if abs(float(value)) > FLOAT32_MAX:
            raise ValueError(
                f"{self.action} value {value} cannot be stored in a float32 head "
                f"(largest {FLOAT32_MAX:.3g}); give a smaller value"
            )
        if self.action == "zero" and float(value) != 0.0:
            raise ValueError("zero takes no value (it sets the weight to 0)")
        object.__setattr__(self, "value", float(value))

    @property
    def on_weights(self) -> bool:
        """True for head-weight edits, False for latent steering."""
        return self.action in WEIGHT_ACTIONS

    @classmethod
    def parse(cls, spec: str, features: Sequence[int] | None = None) -> Intervention:
        """``ACTION[:VALUE][@F1,F2]``; ``features`` is used when the spec names none."""
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError("an action spec must be a non-empty string like 'scale:0.0'")
        head, _, feats = spec.strip().partition("@")
        action, colon, raw = head.partition(":")
        if action not in ACTIONS:
            raise ValueError(
                f"action {spec!r}: unknown action {action!r}; use one of {list(ACTIONS)}"
            )
        if feats:
            features = [_parse_int(f, spec) for f in feats.split(",")]
        if features is None:
            raise ValueError(f"action {spec!r} names no features: add '@ID,ID' or pass features")
        if action == "zero" and colon:
            raise ValueError(f"action {spec!r}: zero takes no value")
        if action != "zero" and not raw:
            raise ValueError(f"action {spec!r} needs a value, e.g. '{action}:0.5'")
        return cls(action, tuple(features), _parse_float(raw, spec) if raw else 0.0)  # type: ignore[arg-type]

    def spec(self) -> str:
        """The spec string :meth:`parse` reads back into an equal intervention."""
        value = "" if self.action == "zero" else f":{self.value!r}"
        return f"{self.action}{value}@{','.join(map(str, self.features))}"

    def to_dict(self) -> dict[str, object]:
        return {"action": self.action, "value": self.value, "features": list(self.features)}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Intervention:
        missing = {"action", "features"} - set(data)
        if missing:
            raise ValueError(f"intervention dict is missing {sorted(missing)}")
        return cls(data["action"], tuple(data["features"]), data.get("value", 0.0))  # type: ignore[arg-type]

    def check(self, d_sae: int) -> None:
        """ValueError if a feature id is outside ``0..d_sae - 1``."""
        bad = [f for f in self.features if f >= d_sae]
        if bad:
            raise ValueError(f"{self.spec()}: feature ids {bad} are out of range 0..{d_sae - 1}")

    def apply(self, values: np.ndarray) -> np.ndarray:
        """This action on an array of weights (edits) or activations (steering)."""
        v = np.asarray(values, dtype=np.float64)
        if self.action in ("set", "zero"):
            return np.full_like(v, self.value)
        if self.action in ("scale", "act_mul"):
            return v * self.value
        return v + self.value


def _parse_int(text: str, spec: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"action {spec!r}: {text!r} is not a feature id") from None


def _parse_float(text: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"action {spec!r}: {text!r} is not a number") from None


def parse_actions(
    specs: Sequence[str], features: Sequence[int] | None = None
) -> list[Intervention]:
    """Parse several spec strings; ``features`` fills in the ones that name none."""
    return [Intervention.parse(s, features) for s in specs]


def _checked(interventions: Sequence[Intervention], d_sae: int) -> list[Intervention]:
    out = list(interventions)
    for item in out:
        if not isinstance(item, Intervention):
            raise ValueError(f"expected Intervention objects, got {type(item).__name__}")
        item.check(d_sae)
    return out


def touched_features(interventions: Sequence[Intervention]) -> np.ndarray:
    """Sorted ids of every feature some intervention acts on."""
    ids = {f for item in interventions for f in item.features}
    return np.array(sorted(ids), dtype=np.int64)


def _weight_vector(weight: np.ndarray) -> np.ndarray:
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"weight must be a 1-D array [d_sae], got shape {w.shape}")
    return w.copy()


def edit_weights(weight: np.ndarray, interventions: Sequence[Intervention]) -> np.ndarray:
    """The head weights after the weight edits, in order (steering is ignored); float64."""
    w = _weight_vector(weight)
    for item in _checked(interventions, len(w)):
        if item.on_weights:
            ids = np.asarray(item.features)
            w[ids] = _storable(item.apply(w[ids]), item)
    return w


def _storable(weights: np.ndarray, item: Intervention) -> np.ndarray:
    """``weights`` if a float32 head can hold them (ValueError naming ``item`` otherwise)."""
    bad = np.flatnonzero(~(np.abs(weights) <= FLOAT32_MAX))
    if bad.size:
        features = [item.features[i] for i in bad[:5]]
        raise ValueError(
            f"{item.spec()} gives feature(s) {features} weights beyond float32 "
            f"(|w| > {FLOAT32_MAX:.3g}), which no saved head can hold; use a smaller value"
        )
    return weights


def steer_values(
    feature: int, values: np.ndarray, interventions: Sequence[Intervention]
) -> np.ndarray:
    """Activations of one feature (where active) after the steering actions on it, in order."""
    out = np.asarray(values, dtype=np.float64).copy()
    for item in interventions:
        if not item.on_weights and feature in item.features:
            out = item.apply(out)
    return out


def steer_latents(latents: SparseLatents, interventions: Sequence[Intervention]) -> SparseLatents:
    """A copy of ``latents`` with the steering actions applied to the stored non-zeros."""
    values = latents.values.astype(np.float64)
    for item in _checked(interventions, latents.d_sae):
        if not item.on_weights:
            hit = np.isin(latents.indices, np.asarray(item.features))
            values[hit] = item.apply(values[hit])
    return SparseLatents(
        latents.indptr, latents.indices, values, latents.d_sae, latents.example_ids
    )


def fold_into_head(weight: np.ndarray, interventions: Sequence[Intervention]) -> np.ndarray:
    """One linear head equal to the interventions: weight edits, then ``act_mul`` folded in.

    ``w_i (m z_i) = (m w_i) z_i``, so multiplicative steering is exactly a weight
    scale. ``act_add`` adds ``w_i a`` wherever feature ``i`` is active, which no
    linear head over ``z`` can express: it raises ValueError.
    """
    items = list(interventions)
    adds = [item.spec() for item in items if item.action == "act_add"]
    if adds:
        raise ValueError(
            f"{adds} cannot be written as a linear head (act_add depends on whether a latent "
            "is active, not on its value); use a weight action or act_mul to save a head"
        )
    w = edit_weights(weight, items)
    for item in items:
        if item.action == "act_mul":
            ids = np.asarray(item.features)
            w[ids] = _storable(w[ids] * item.value, item)
    return w


def shifted_rewards(
    latents: SparseLatents,
    weight: np.ndarray,
    bias: float,
    interventions: Sequence[Intervention],
    base_rewards: np.ndarray | None = None,
) -> np.ndarray:
    """Rewards under the interventions, updated from the touched columns only (float64).

    ``base_rewards`` (:func:`sarm.head.rewards` of ``weight``) may be passed to skip
    recomputing it; it is not modified.
    """
    w = _weight_vector(weight)
    if len(w) != latents.d_sae:
        raise ValueError(f"weight has {len(w)} entries, the latents have {latents.d_sae}")
    items = _checked(interventions, latents.d_sae)
    out = rewards(latents, w, bias) if base_rewards is None else _base(base_rewards, latents.n)
    edited = edit_weights(w, items)
    for f in touched_features(items):
        rows, vals = latents.column(int(f))
        old = vals.astype(np.float64)
        out[rows] += edited[f] * steer_values(int(f), old, items) - w[f] * old
    return out


def _base(base_rewards: np.ndarray, n: int) -> np.ndarray:
    base = np.array(base_rewards, dtype=np.float64)
    if base.shape != (n,):
        raise ValueError(f"base_rewards must have shape ({n},), got {base.shape}")
    return base


def preview_score(score: Score, weight: np.ndarray, interventions: Sequence[Intervention]) -> Score:
    """A copy of one :class:`~sarm.model.Score` with the interventions applied.

    ``weight`` is the head's full weight vector. Only the features active in the
    score can change it; the returned contributions still sum (with the bias) to
    the returned reward.
    """
    w = _weight_vector(weight)
    items = _checked(interventions, len(w))
    edited = edit_weights(w, items)
    acts = {
        f: float(steer_values(f, np.array([a]), items)[0]) for f, a in score.activations.items()
    }
    # float64 what-if values (steered activations are not float32 latents): c_i = w_i z_i
    terms = {f: float(edited[f] * a) for f, a in acts.items()}
    reward = math.fsum(terms.values()) + score.bias
    return dataclasses.replace(score, reward=reward, contributions=terms, activations=acts)
