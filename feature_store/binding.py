"""What a store is bound to: model fingerprint, head used at ingest, dataset.

The first ingest writes the binding into ``meta`` and ``head_weights``; every
later ingest, resume or merge must present the same backbone, layer, SAE and
dataset, or gets a StoreMismatchError.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from feature_store.chunks import insert_arrow
from feature_store.errors import StoreMismatchError
from feature_store.heads import INGEST_HEAD
from feature_store.meta import MODEL_KEYS, put_meta
from feature_store.validate import check_int

if TYPE_CHECKING:
    from feature_store.store import FeatureStore

logger = logging.getLogger(__name__)
FINGERPRINT_KEYS: tuple[str, ...] = (*MODEL_KEYS, "head")


@dataclass(frozen=True)
class Binding:
    """Model, head and dataset identity of an ingest."""

    fingerprint: dict[str, str]
    d_sae: int
    head_weights: np.ndarray = field(repr=False)
    head_bias: float
    data_fingerprint: str
    n_examples: int
    chunk_size: int
    source: str = ""

    def __post_init__(self) -> None:
        missing = [k for k in FINGERPRINT_KEYS if k not in self.fingerprint]
        if missing:
            raise ValueError(f"model fingerprint lacks {missing}")
        object.__setattr__(
            self, "fingerprint", {k: str(self.fingerprint[k]) for k in FINGERPRINT_KEYS}
        )
        check_int(self.d_sae, "d_sae", low=1)
        check_int(self.n_examples, "n_examples", low=1)
        check_int(self.chunk_size, "chunk_size", low=1)
        w = np.asarray(self.head_weights, dtype=np.float32)
        if w.shape != (self.d_sae,):
            raise ValueError(f"head weights must have shape ({self.d_sae},), got {w.shape}")
        object.__setattr__(self, "head_weights", w)
        object.__setattr__(self, "head_bias", float(self.head_bias))

    @classmethod
    def from_sarm(
        cls, sarm: Any, data_fingerprint: str, n_examples: int, chunk_size: int, source: str = ""
    ) -> Binding:
        weights = sarm.head.weight.detach().float().cpu().numpy().reshape(-1)
        bias = float(getattr(sarm.head, "bias", 0.0) or 0.0)
        return cls(
            dict(sarm.fingerprint()),
            int(sarm.d_sae),
            weights,
            bias,
            data_fingerprint,
            n_examples,
            chunk_size,
            source,
        )

    def meta(self) -> dict[str, str]:
        """Entries of the ``meta`` table (and of a shard manifest)."""
        return {
            **self.fingerprint,
            "d_sae": str(self.d_sae),
            "head_bias": repr(self.head_bias),
            "data_fingerprint": self.data_fingerprint,
            "n_examples": str(self.n_examples),
            "chunk_size": str(self.chunk_size),
            "source": self.source,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, str], head_weights: np.ndarray) -> Binding:
        return cls(
            {k: meta[k] for k in FINGERPRINT_KEYS},
            int(meta["d_sae"]),
            head_weights,
            float(meta["head_bias"]),
            meta["data_fingerprint"],
            int(meta["n_examples"]),
            int(meta["chunk_size"]),
            meta.get("source", ""),
        )

    def head_table(self) -> pa.Table:
        return pa.table(
            {"feature_id": np.arange(self.d_sae, dtype=np.int32), "weight": self.head_weights}
        )

    def same_head(self, other: Binding) -> bool:
        return self.head_bias == other.head_bias and np.array_equal(
            self.head_weights, other.head_weights
        )


def stored_binding(store: FeatureStore) -> Binding | None:
    """The binding recorded in the store, or None for a fresh store."""
    meta = store.meta()
    if "data_fingerprint" not in meta:
        return None
    weights, _ = store.head_weights()
    return Binding.from_meta(meta, weights)


def bind(store: FeatureStore, wanted: Binding) -> Binding:
    """Record ``wanted`` in a fresh store, or check it against the stored binding.

    Returns the binding in force: the stored one when the store already had one
    (its chunk size and ingest head win, with a warning when they differ).
    """
    current = stored_binding(store)
    if current is None:
        _write_binding(store, wanted)
        return wanted
    store.check_model(wanted.fingerprint)
    if current.d_sae != wanted.d_sae:
        raise StoreMismatchError(
            f"store {store.path} has d_sae {current.d_sae}, the model {wanted.d_sae}"
        )
    if (
        current.data_fingerprint != wanted.data_fingerprint
        or current.n_examples != wanted.n_examples
    ):
        raise StoreMismatchError(
            f"store {store.path} indexes a different dataset ({current.n_examples} examples, "
            f"fingerprint {current.data_fingerprint}) than the one given ({wanted.n_examples} "
            f"examples, fingerprint {wanted.data_fingerprint}); use a new store path"
        )
    if current.chunk_size != wanted.chunk_size:
        warnings.warn(
            f"store {store.path} was started with chunk_size {current.chunk_size}; resuming with it",
            stacklevel=2,
        )
    return replace(current, source=current.source or wanted.source)


def _write_binding(store: FeatureStore, binding: Binding) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with store.write("recording the model binding") as cur:
        put_meta(cur, {**binding.meta(), "created_at": now.isoformat(), "complete": "false"})
        insert_arrow(cur, "head_weights", binding.head_table())
        cur.execute(
            "INSERT OR IGNORE INTO head_versions VALUES (?, NULL, ?, '', '{}', ?, ?, ?)",
            [
                INGEST_HEAD,
                f"head used to index this store ({binding.fingerprint['head']})",
                binding.head_bias,
                binding.head_weights.tolist(),
                now,
            ],
        )
    logger.info("feature store %s bound to %s", store.path, binding.fingerprint)
