"""Named head versions: save, list, diff, load back.

A head version is immutable once saved (a new idea gets a new name, with the
old one as its ``parent``), so the history of edits is never lost. Saved
versions live in the annotations database (:mod:`feature_store.annotations`);
the version ``ingest`` is the head the DuckDB store was indexed with, read from
its ``head_weights`` table, so it always matches the store's rewards.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from feature_store import labels, queries
from feature_store.connection import Connection
from feature_store.errors import HeadVersionError
from feature_store.validate import check_finite, check_str
from sarm.constants import INGEST_HEAD

_NAME = re.compile(r"^[\w][\w .:@+-]{0,99}$")


def check_name(name: object, what: str = "head version name") -> str:
    """A name of 1-100 letters, digits, spaces and ``_ . : @ + -`` (not starting with a symbol)."""
    if not isinstance(name, str) or not _NAME.match(name) or name != name.strip():
        raise HeadVersionError(
            f"{what} {name!r} is not valid: use 1-100 letters, digits, spaces or _ . : @ + -, "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class HeadVersion:
    """A saved linear head: dense weights ``[d_sae]`` (float32) and bias."""

    name: str
    weights: np.ndarray = field(repr=False)
    bias: float = 0.0
    parent: str | None = None
    note: str = ""
    author: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.parent is not None:
            check_name(self.parent, "parent head version")
        w = np.asarray(self.weights, dtype=np.float32)
        if w.ndim != 1 or w.size == 0:
            raise HeadVersionError(
                f"head {self.name!r}: weights must be a non-empty 1-D array, got shape {w.shape}"
            )
        if not np.isfinite(w).all():
            raise HeadVersionError(f"head {self.name!r}: weights contain NaN or infinity")
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "bias", check_finite(self.bias, f"head {self.name!r} bias"))
        object.__setattr__(self, "note", check_str(self.note, "note", max_chars=10_000))
        object.__setattr__(self, "author", check_str(self.author, "author", max_chars=100))
        metrics = {str(k): check_finite(v, f"metric {k!r}") for k, v in dict(self.metrics).items()}
        object.__setattr__(self, "metrics", metrics)

    @property
    def d_sae(self) -> int:
        return int(self.weights.shape[0])


def save_head(
    conn: Connection,
    name: str,
    weights: Sequence[float] | np.ndarray,
    bias: float = 0.0,
    *,
    parent: str | None = None,
    note: str = "",
    author: str = "",
    metrics: Mapping[str, float] | None = None,
) -> HeadVersion:
    """Save a new head version; HeadVersionError if the name is taken or the shape is wrong."""
    head = HeadVersion(name, np.asarray(weights), bias, parent, note, author, dict(metrics or {}))
    d_sae = conn.d_sae
    if d_sae is not None and head.d_sae != d_sae:
        raise HeadVersionError(
            f"head {name!r} has {head.d_sae} weights; this store's SAE has {d_sae} latents"
        )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    row = (
        head.name,
        head.parent,
        head.note,
        head.author,
        json.dumps(head.metrics),
        head.bias,
        head.weights.astype("<f4").tobytes(),
        now,
    )
    reserved = frozenset({INGEST_HEAD}) if d_sae is not None else frozenset()
    conn.annotations.add_head(row, reserved)
    return HeadVersion(**{**head.__dict__, "created_at": now})


def ingest_head(conn: Connection) -> HeadVersion | None:
    """The head the store was indexed with, as version ``ingest`` (None before ingest)."""
    meta = conn.meta()
    if "d_sae" not in meta:
        return None
    weights, bias = queries.head_weights(conn)
    created = meta.get("created_at")
    return HeadVersion(
        INGEST_HEAD,
        weights,
        bias,
        note=f"head used to index this store ({meta.get('head', 'unknown')})",
        created_at=datetime.fromisoformat(created) if created else None,
    )


def _from_row(row: tuple) -> HeadVersion:
    name, parent, note, author, metrics, bias, weights, created_at = row
    return HeadVersion(
        name,
        np.frombuffer(weights, dtype="<f4").astype(np.float32),
        bias,
        parent,
        note,
        author,
        json.loads(metrics),
        datetime.fromisoformat(created_at),
    )


def head_versions(conn: Connection) -> pd.DataFrame:
    """``name, parent, note, author, created_at, bias, d_sae, n_nonzero`` plus one column per metric."""
    versions = [_from_row(row) for row in conn.annotations.head_rows()]
    ingest = ingest_head(conn)
    versions += [ingest] if ingest is not None else []
    frame = pd.DataFrame(
        [
            {
                "name": v.name,
                "parent": v.parent,
                "note": v.note,
                "author": v.author,
                "created_at": pd.Timestamp(v.created_at) if v.created_at else pd.NaT,
                "bias": v.bias,
                "d_sae": v.d_sae,
                "n_nonzero": int(np.count_nonzero(v.weights)),
            }
            for v in versions
        ],
        columns=["name", "parent", "note", "author", "created_at", "bias", "d_sae", "n_nonzero"],
    )
    metrics = pd.DataFrame([v.metrics for v in versions], index=frame.index)
    frame = pd.concat([frame, metrics.add_prefix("metric_")], axis=1)
    order = frame.sort_values(["created_at", "name"], ascending=[False, True], kind="stable")
    return order.reset_index(drop=True)


def load_head(conn: Connection, name: str) -> HeadVersion:
    """The saved head version ``name``; HeadVersionError if there is none."""
    check_name(name)
    if name == INGEST_HEAD:
        found = ingest_head(conn)
    else:
        rows = conn.annotations.head_rows(name)
        found = _from_row(rows[0]) if rows else None
    if found is None:
        raise HeadVersionError(f"head version {name!r} does not exist in {conn.path}")
    return found


def diff_heads(conn: Connection, a: str, b: str) -> pd.DataFrame:
    """Features whose weight differs from ``a`` to ``b``, largest |change| first.

    Columns ``feature_id, weight_a, weight_b, delta, label``; the biases are in
    ``frame.attrs["bias_a"]`` and ``frame.attrs["bias_b"]``.
    """
    head_a, head_b = load_head(conn, a), load_head(conn, b)
    if head_a.d_sae != head_b.d_sae:
        raise HeadVersionError(f"head versions {a!r} and {b!r} have different sizes")
    changed = np.flatnonzero(head_a.weights != head_b.weights)
    wa = head_a.weights[changed].astype(np.float64)
    wb = head_b.weights[changed].astype(np.float64)
    frame = pd.DataFrame({"feature_id": changed, "weight_a": wa, "weight_b": wb, "delta": wb - wa})
    frame = frame.sort_values(["delta"], key=np.abs, ascending=False, kind="stable")
    frame = frame.reset_index(drop=True)
    names = labels.labels_for(conn, changed.tolist())
    frame["label"] = [names.get(int(f)) for f in frame["feature_id"]]
    frame.attrs.update(bias_a=head_a.bias, bias_b=head_b.bias)
    return frame
