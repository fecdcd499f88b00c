"""Per-token activations for highlighting, computed on demand and cached.

Ingest stores only the pooled latents z_T. Highlighting a response needs z_t
for every token, for the few features a page shows: one forward pass of one
example (well under a second on the embedded default). Results are cached in
``token_cache`` (tokens, reward trajectory) and ``token_activations`` (one row
per example and feature), so each highlight is computed once per store.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from feature_store import queries
from feature_store.connection import Connection
from feature_store.errors import NotCachedError, StoreError
from feature_store.source import TokenSource
from feature_store.sqlutil import fetch_one
from feature_store.validate import check_feature_id, check_int

logger = logging.getLogger(__name__)
MAX_FEATURES = 256


@dataclass(frozen=True)
class TokenHighlights:
    """``values[t, j]`` = activation z_t of ``feature_ids[j]`` at token ``tokens[t]``.

    ``trajectory[t]`` = r_t = w . z_t under the head with fingerprint ``head``.
    """

    example_id: int
    tokens: list[str]
    feature_ids: list[int]
    values: np.ndarray = field(repr=False)
    trajectory: np.ndarray = field(repr=False)
    head: str

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.tokens), len(self.feature_ids)):
            raise ValueError(
                f"values must have shape ({len(self.tokens)}, {len(self.feature_ids)}), "
                f"got {self.values.shape}"
            )
        if self.trajectory.shape != (len(self.tokens),):
            raise ValueError("trajectory must have one value per token")

    def feature(self, feature_id: int) -> np.ndarray:
        """Per-token activations of one of the requested features."""
        return self.values[:, self.feature_ids.index(feature_id)]


def _check_ids(conn: Connection, feature_ids: Sequence[int]) -> list[int]:
    if isinstance(feature_ids, (str, bytes)) or not isinstance(feature_ids, Sequence):
        raise ValueError("feature_ids must be a list of feature ids")
    d_sae = conn.d_sae
    ids = list(dict.fromkeys(check_feature_id(f, d_sae) for f in feature_ids))
    if not 0 < len(ids) <= MAX_FEATURES:
        raise ValueError(f"give between 1 and {MAX_FEATURES} feature ids, got {len(ids)}")
    return ids


def _cached(
    conn: Connection, eid: int, ids: list[int]
) -> tuple[tuple | None, dict[int, np.ndarray]]:
    with conn.read("reading cached token activations") as cur:
        head_row = fetch_one(
            cur, "SELECT tokens, trajectory, head FROM token_cache WHERE example_id = ?", [eid]
        )
        rows = cur.execute(
            """SELECT feature_id, activations FROM token_activations
               WHERE example_id = $eid AND list_contains($ids::INTEGER[], feature_id)""",
            {"eid": eid, "ids": ids},
        ).fetchall()
    return head_row, {fid: np.asarray(vals, dtype=np.float32) for fid, vals in rows}


def token_activations(
    conn: Connection, example_id: int, feature_ids: Sequence[int], sarm: TokenSource | None = None
) -> TokenHighlights:
    """Cached per-token activations, computing (and caching) the missing ones with ``sarm``.

    Without ``sarm``, NotCachedError names what is missing. A read-only store
    computes but does not cache.
    """
    eid = check_int(example_id, "example_id", low=0)
    ids = _check_ids(conn, feature_ids)
    head_row, cached = _cached(conn, eid, ids)
    missing = [f for f in ids if f not in cached]
    if head_row is None or missing:
        if sarm is None:
            raise NotCachedError(
                f"per-token activations of example {eid} for features {missing or ids} are not "
                "cached; pass a loaded SARM (sarm=...) to compute them"
            )
        head_row, computed = _compute(conn, sarm, eid, missing or ids[:1], head_row)
        cached.update(computed)
    tokens, trajectory, head = head_row
    values = np.stack([cached[f] for f in ids], axis=1).astype(np.float32)
    return TokenHighlights(eid, list(tokens), ids, values, np.asarray(trajectory, np.float32), head)


def _compute(
    conn: Connection, sarm: TokenSource, eid: int, ids: list[int], head_row: tuple | None
) -> tuple[tuple, dict[int, np.ndarray]]:
    fingerprint = sarm.fingerprint()
    conn.check_model(fingerprint)
    conversation = queries.example(conn, eid).conversation()
    result = sarm.token_activations(conversation, ids)
    values = np.asarray(result.values, dtype=np.float32)
    tokens = [str(t) for t in result.tokens]
    if values.shape != (len(tokens), len(ids)):
        raise StoreError(
            f"model returned token activations of shape {values.shape} for example {eid}"
        )
    if head_row is not None and len(head_row[0]) != len(tokens):
        raise StoreError(
            f"example {eid}: the model gives {len(tokens)} tokens but {len(head_row[0])} are cached; "
            "the store was built with another tokenizer"
        )
    if head_row is None:
        head_row = (
            tokens,
            np.asarray(result.reward_trajectory, np.float32).tolist(),
            fingerprint["head"],
        )
    computed = {f: values[:, j] for j, f in enumerate(ids)}
    if conn.read_only:
        logger.debug("read-only store: token activations of example %d not cached", eid)
    else:
        _store_cache(conn, eid, head_row, computed)
    return head_row, computed


def _store_cache(
    conn: Connection, eid: int, head_row: tuple, computed: dict[int, np.ndarray]
) -> None:
    tokens, trajectory, head = head_row
    with conn.write(f"caching token activations of example {eid}") as cur:
        cur.execute(
            "INSERT OR IGNORE INTO token_cache VALUES (?, ?, ?, ?)",
            [eid, list(tokens), list(trajectory), head],
        )
        cur.executemany(
            "INSERT OR IGNORE INTO token_activations VALUES (?, ?, ?)",
            [[eid, f, v.tolist()] for f, v in computed.items()],
        )


def warm_token_cache(
    conn: Connection,
    sarm: TokenSource,
    feature_ids: Sequence[int],
    per_feature: int = 5,
    *,
    progress: bool = True,
) -> int:
    """Precompute highlights of each feature's top ``per_feature`` examples (a bounded set).

    One forward per distinct example, covering every requested feature that
    lists it. Returns the number of examples computed now.
    """
    check_int(per_feature, "per_feature", low=1, high=1001)
    wanted: dict[int, list[int]] = {}
    for fid in dict.fromkeys(check_feature_id(f, conn.d_sae) for f in feature_ids):
        for eid in queries.top_examples(conn, fid, per_feature)["example_id"]:
            wanted.setdefault(int(eid), []).append(fid)
    done = 0
    for eid, fids in tqdm(wanted.items(), desc="highlights", unit="ex", disable=not progress):
        for start in range(0, len(fids), MAX_FEATURES):
            head_row, cached = _cached(conn, eid, fids[start : start + MAX_FEATURES])
            missing = [f for f in fids[start : start + MAX_FEATURES] if f not in cached]
            if missing or head_row is None:
                _compute(conn, sarm, eid, missing or fids[:1], head_row)
                done += 1
    return done
