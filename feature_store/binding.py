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

import numpy as np
import pyarrow as pa

from feature_store.chunks import insert_arrow
from feature_store.connection import Connection
from feature_store.errors import StoreMismatchError
from feature_store.meta import MODEL_KEYS, put_meta
from feature_store.queries import head_weights
from feature_store.source import LatentSource
from feature_store.validate import check_int
from sarm.constants import INGEST_HEAD
from sarm.head import Head

logger = logging.getLogger(__name__)
FINGERPRINT_KEYS: tuple[str, ...] = (*MODEL_KEYS, "head")


@dataclass(frozen=True)
class Binding:
    """Model, head and dataset identity of an ingest.

    ``head`` is the ingest head: every stored reward is ``head.rewards`` of the
    stored latents.
    """

    fingerprint: dict[str, str]
    d_sae: int
    head: Head = field(repr=False)
    data_fingerprint: str
    n_examples: int
    chunk_size: int
    source: str = ""
    error_feature: int | None = None  # the SAE-error column (sarm.residual), if the model reads it

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
        if not isinstance(self.head, Head):
            raise TypeError(f"the ingest head must be a sarm.head.Head, got {type(self.head)}")
        if self.head.size != self.d_sae:
            raise ValueError(f"head weights must have shape ({self.d_sae},), got {self.head.size}")
        if self.error_feature is not None:
            check_int(self.error_feature, "error_feature", low=0, high=self.d_sae)
        object.__setattr__(self, "head", self.head.applied())

    @classmethod
    def from_source(
        cls,
        source: LatentSource,
        data_fingerprint: str,
        n_examples: int,
        chunk_size: int,
        data_source: str = "",
    ) -> Binding:
        """The binding of an ingest from ``source`` (its fingerprint and head)."""
        return cls(
            dict(source.fingerprint()),
            int(source.d_sae),
            source.head,
            data_fingerprint,
            n_examples,
            chunk_size,
            data_source,
            getattr(source, "error_feature", None),
        )

    def meta(self) -> dict[str, str]:
        """Entries of the ``meta`` table (and of a shard manifest)."""
        return {
            **self.fingerprint,
            "d_sae": str(self.d_sae),
            "head_bias": repr(self.head.bias),
            "data_fingerprint": self.data_fingerprint,
            "n_examples": str(self.n_examples),
            "chunk_size": str(self.chunk_size),
            "source": self.source,
            "error_feature": "" if self.error_feature is None else str(self.error_feature),
        }

    @classmethod
    def from_meta(cls, meta: dict[str, str], head_weights: np.ndarray) -> Binding:
        return cls(
            {k: meta[k] for k in FINGERPRINT_KEYS},
            int(meta["d_sae"]),
            Head(head_weights, float(meta["head_bias"]), name=INGEST_HEAD),
            meta["data_fingerprint"],
            int(meta["n_examples"]),
            int(meta["chunk_size"]),
            meta.get("source", ""),
            int(meta["error_feature"]) if meta.get("error_feature") else None,
        )

    def head_table(self) -> pa.Table:
        return pa.table(
            {"feature_id": np.arange(self.d_sae, dtype=np.int32), "weight": self.head.weight}
        )

    def same_head(self, other: Binding) -> bool:
        return self.head.bias == other.head.bias and np.array_equal(
            self.head.weight, other.head.weight
        )


def stored_binding(conn: Connection) -> Binding | None:
    """The binding recorded in the conn, or None for a fresh store."""
    meta = conn.meta()
    if "data_fingerprint" not in meta:
        return None
    weights, _ = head_weights(conn)
    return Binding.from_meta(meta, weights)


def bind(conn: Connection, wanted: Binding) -> Binding:
    """Record ``wanted`` in a fresh conn, or check it against the stored binding.

    Returns the binding in force: the stored one when the store already had one
    (its chunk size and ingest head win, with a warning when they differ).
    """
    current = stored_binding(conn)
    if current is None:
        _write_binding(conn, wanted)
        return wanted
    conn.check_model(wanted.fingerprint)
    if current.d_sae != wanted.d_sae:
        raise StoreMismatchError(
            f"store {conn.path} has d_sae {current.d_sae}, the model {wanted.d_sae}"
        )
    if (
        current.data_fingerprint != wanted.data_fingerprint
        or current.n_examples != wanted.n_examples
    ):
        raise StoreMismatchError(
            f"store {conn.path} indexes a different dataset ({current.n_examples} examples, "
            f"fingerprint {current.data_fingerprint}) than the one given ({wanted.n_examples} "
            f"examples, fingerprint {wanted.data_fingerprint}); use a new store path"
        )
    if current.chunk_size != wanted.chunk_size:
        warnings.warn(
            f"store {conn.path} was started with chunk_size {current.chunk_size}; resuming with it",
            stacklevel=2,
        )
    return replace(current, source=current.source or wanted.source)


def _write_binding(conn: Connection, binding: Binding) -> None:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with conn.write("recording the model binding") as cur:
        put_meta(cur, {**binding.meta(), "created_at": now.isoformat(), "complete": "false"})
        insert_arrow(cur, "head_weights", binding.head_table())
        cur.execute(
            "INSERT OR IGNORE INTO head_versions VALUES (?, NULL, ?, '', '{}', ?, ?, ?)",
            [
                INGEST_HEAD,
                f"head used to index this store ({binding.fingerprint['head']})",
                binding.head.bias,
                binding.head.weight.tolist(),
                now,
            ],
        )
    logger.info("feature store %s bound to %s", conn.path, binding.fingerprint)
