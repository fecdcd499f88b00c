"""Read queries behind the dashboard: feature tables, top examples, examples, latents.

Every value reaches DuckDB as a bound parameter. The only SQL assembled in
Python is the ORDER BY clause, picked from the fixed :data:`FEATURE_ORDERS`.
Queries that show labels join ``current_labels``, the latest labels of the
annotations database registered on the cursor by ``Connection.read_labels``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from feature_store.connection import Connection
from feature_store.sqlutil import fetch_one, large_frame, small_frame
from feature_store.validate import check_feature_id, check_finite, check_int, check_str
from sarm.latents import SparseLatents
from sarm.types import Response

#: sort keys accepted by ``features(order_by=...)`` and the SQL they stand for
FEATURE_ORDERS: dict[str, str] = {
    "feature_id": "s.feature_id",
    "weight": "s.weight",
    "abs_weight": "abs(s.weight)",
    "frequency": "s.frequency",
    "mean_activation": "s.mean_activation",
    "max_activation": "s.max_activation",
    "mean_contribution": "s.mean_contribution",
    "abs_contribution": "abs(s.mean_contribution)",
    "salience": "s.salience",
    "abs_salience": "abs(s.salience)",
    "label": "l.label",
}
MAX_ROWS = 100_000

FEATURE_COLUMNS = """
    s.feature_id, s.weight, s.frequency, s.n_active, s.mean_activation, s.max_activation,
    s.min_activation, s.mean_contribution, s.chosen_mean, s.rejected_mean, s.salience,
    nullif(l.label, '') AS label, l.description AS label_description"""

FEATURE_FILTER = """
    FROM feature_stats s LEFT JOIN current_labels l USING (feature_id)
    WHERE ($min_frequency::DOUBLE IS NULL OR s.frequency >= $min_frequency)
      AND ($max_frequency::DOUBLE IS NULL OR s.frequency <= $max_frequency)
      AND ($labelled::BOOLEAN IS NULL OR (coalesce(l.label, '') <> '') = $labelled)
      AND ($feature_ids::INTEGER[] IS NULL OR list_contains($feature_ids, s.feature_id))
      AND ($search::VARCHAR IS NULL
           OR contains(lower(coalesce(l.label, '')), lower($search))
           OR contains(lower(coalesce(l.description, '')), lower($search)))"""

EXAMPLE_COLUMNS = """e.prompt, e.response, e.role, e.group_id, e.response_index,
    e.subset, e.kind, e.reward, e.n_tokens"""


def _filters(
    min_frequency: float | None,
    max_frequency: float | None,
    labelled: bool | None,
    feature_ids: list[int] | None,
    search: str | None,
) -> dict[str, Any]:
    if labelled is not None and not isinstance(labelled, bool):
        raise ValueError(f"labelled must be True, False or None, got {labelled!r}")
    return {
        "min_frequency": None
        if min_frequency is None
        else check_finite(min_frequency, "min_frequency"),
        "max_frequency": None
        if max_frequency is None
        else check_finite(max_frequency, "max_frequency"),
        "labelled": labelled,
        "feature_ids": None
        if feature_ids is None
        else [check_int(f, "feature_ids[]", low=0) for f in feature_ids],
        "search": None if not search else check_str(search, "search", max_chars=500) or None,
    }


def features(
    conn: Connection,
    *,
    order_by: str = "abs_contribution",
    descending: bool = True,
    limit: int | None = 100,
    offset: int = 0,
    min_frequency: float | None = None,
    max_frequency: float | None = None,
    labelled: bool | None = None,
    feature_ids: list[int] | None = None,
    search: str | None = None,
) -> pd.DataFrame:
    """One row per feature: statistics, head weight and latest label.

    ``order_by`` is one of :data:`FEATURE_ORDERS`; ties break by feature id.
    ``search`` matches the latest label or description (case-insensitive).
    """
    if order_by not in FEATURE_ORDERS:
        raise ValueError(f"order_by must be one of {sorted(FEATURE_ORDERS)}, got {order_by!r}")
    params = _filters(min_frequency, max_frequency, labelled, feature_ids, search)
    params["limit"] = None if limit is None else check_int(limit, "limit", low=0, high=MAX_ROWS + 1)
    params["offset"] = check_int(offset, "offset", low=0)
    direction = "DESC" if descending else "ASC"
    sql = (
        f"SELECT {FEATURE_COLUMNS} {FEATURE_FILTER} "
        f"ORDER BY {FEATURE_ORDERS[order_by]} {direction} NULLS LAST, s.feature_id "
        "LIMIT $limit OFFSET $offset"
    )
    fetch = small_frame if params["limit"] is not None and params["limit"] <= 5000 else large_frame
    with conn.read_labels("listing features") as cur:
        return fetch(cur, sql, params)


def count_features(
    conn: Connection,
    *,
    min_frequency: float | None = None,
    max_frequency: float | None = None,
    labelled: bool | None = None,
    feature_ids: list[int] | None = None,
    search: str | None = None,
) -> int:
    """Number of features matching the same filters as :func:`features`."""
    params = _filters(min_frequency, max_frequency, labelled, feature_ids, search)
    with conn.read_labels("counting features") as cur:
        return int(fetch_one(cur, f"SELECT count(*) {FEATURE_FILTER}", params)[0])


def feature(conn: Connection, feature_id: int) -> dict[str, Any]:
    """One feature's row of :func:`features` as a dict."""
    fid = check_feature_id(feature_id, conn.d_sae)
    frame = features(conn, feature_ids=[fid], limit=1)
    if frame.empty:
        raise LookupError(f"feature {fid} has no statistics; run refresh_stats() after ingest")
    return frame.iloc[0].to_dict()


def _stored_top_n(conn: Connection) -> int:
    return int(conn.meta().get("stats_top_n", 0))


def top_examples(conn: Connection, feature_id: int, limit: int = 20) -> pd.DataFrame:
    """The ``limit`` examples where ``feature_id`` is most active, strongest first.

    Served from the precomputed selection when ``limit`` is within the top-N
    computed by ``refresh_stats``; otherwise ranked from ``latents_by_feature``
    (sorted by feature: only the feature's row groups are read).
    """
    fid = check_feature_id(feature_id, conn.d_sae)
    limit = check_int(limit, "limit", low=1, high=MAX_ROWS + 1)
    if limit <= _stored_top_n(conn):
        picked = """SELECT rank, example_id, activation FROM feature_examples
            WHERE feature_id = $fid AND band = 0 AND rank <= $limit"""
    else:
        picked = """SELECT row_number() OVER (ORDER BY activation DESC, example_id) AS rank,
                example_id, activation
            FROM latents_by_feature WHERE feature_id = $fid
            ORDER BY activation DESC, example_id LIMIT $limit"""
    sql = f"""WITH picked AS ({picked})
        SELECT p.rank, p.example_id, p.activation,
               contribution(p.activation, w.weight) AS contribution, {EXAMPLE_COLUMNS}
        FROM picked p JOIN examples e USING (example_id)
        LEFT JOIN head_weights w ON w.feature_id = $fid
        ORDER BY p.rank"""
    with conn.read("ranking top examples") as cur:
        return small_frame(cur, sql, {"fid": fid, "limit": limit})


def quantile_examples(conn: Connection, feature_id: int) -> pd.DataFrame:
    """Examples sampled from lower activation quantiles (band 1 = just below the top)."""
    fid = check_feature_id(feature_id, conn.d_sae)
    sql = f"""SELECT p.band, p.rank, p.example_id, p.activation,
               contribution(p.activation, w.weight) AS contribution,
               {EXAMPLE_COLUMNS}
        FROM feature_examples p JOIN examples e USING (example_id)
        LEFT JOIN head_weights w ON w.feature_id = $fid
        WHERE p.feature_id = $fid AND p.band > 0
        ORDER BY p.band, p.rank"""
    with conn.read("reading quantile examples") as cur:
        return small_frame(cur, sql, {"fid": fid})


def feature_histogram(conn: Connection, feature_id: int) -> pd.DataFrame:
    """Histogram of ``feature_id``'s non-zero activations: ``bin, lo, hi, count``."""
    fid = check_feature_id(feature_id, conn.d_sae)
    n_bins = int(conn.meta().get("stats_hist_bins", 0))
    with conn.read("reading a histogram") as cur:
        bounds = fetch_one(
            cur,
            "SELECT min_activation, max_activation FROM feature_stats WHERE feature_id = ? AND n_active > 0",
            [fid],
        )
        counts = cur.execute(
            "SELECT bin, count FROM feature_histograms WHERE feature_id = ?", [fid]
        ).fetchall()
    if bounds is None or n_bins == 0:
        return pd.DataFrame({"bin": [], "lo": [], "hi": [], "count": []})
    lo, hi = bounds
    edges = np.linspace(lo, hi, n_bins + 1) if hi > lo else np.array([lo] + [hi] * n_bins)
    dense = np.zeros(n_bins, dtype=np.int64)
    for b, c in counts:
        dense[b] = c
    return pd.DataFrame(
        {"bin": np.arange(n_bins), "lo": edges[:-1], "hi": edges[1:], "count": dense}
    )


@dataclass(frozen=True)
class StoredExample(Response):
    """One stored response: its :class:`~sarm.types.Response` fields, reward and features.

    ``features`` has ``feature_id, activation, weight, contribution, label``,
    sorted by |contribution|, largest first.
    """

    reward: float = 0.0
    n_tokens: int = 0
    truncated: bool = False
    features: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


def example(conn: Connection, example_id: int) -> StoredExample:
    """The example with ``example_id``; LookupError if there is none."""
    eid = check_int(example_id, "example_id", low=0)
    with conn.read_labels("reading an example") as cur:
        cur.execute(
            """SELECT example_id, group_index, group_id, role, response_index, kind, subset,
                      target, prompt, response, prompt_messages, reward, n_tokens, truncated
               FROM examples WHERE example_id = ?""",
            [eid],
        )
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        if not rows:
            raise LookupError(f"example {eid} is not in feature store {conn.path}")
        feats = small_frame(
            cur,
            """SELECT c.feature_id, c.activation, c.weight, c.contribution,
                      nullif(l.label, '') AS label
               FROM contributions c LEFT JOIN current_labels l USING (feature_id)
               WHERE c.example_id = ?
               ORDER BY abs(c.contribution) DESC, c.feature_id""",
            [eid],
        )
    values = dict(zip(names, rows[0], strict=True))
    values["prompt_messages"] = tuple(json.loads(values["prompt_messages"]))
    return StoredExample(**values, features=feats)


def examples_frame(conn: Connection, *, with_text: bool = False) -> pd.DataFrame:
    """Every example ordered by id: ids, role, subset, kind, target, reward, tokens."""
    text = ", prompt, response" if with_text else ""
    with conn.read("listing examples") as cur:
        return large_frame(
            cur,
            f"""SELECT example_id, group_index, group_id, role, response_index, kind, subset,
                       target, reward, n_tokens, truncated{text}
                FROM examples ORDER BY example_id""",
        )


def latent_matrix(conn: Connection) -> SparseLatents:
    """Bulk read of all pooled latents: rows ordered by example_id, then feature_id."""
    with conn.read("reading latents") as cur:
        ids = cur.execute("SELECT example_id FROM examples ORDER BY example_id").fetchnumpy()
        nz = cur.execute("SELECT example_id, feature_id, activation FROM latents").fetchnumpy()
    example_ids = np.asarray(ids["example_id"], dtype=np.int64)
    rows = np.asarray(nz["example_id"], dtype=np.int64)
    feats = np.asarray(nz["feature_id"], dtype=np.int32)
    values = np.asarray(nz["activation"], dtype=np.float32)
    if not _is_sorted(rows, feats):  # insertion order is example order after any ingest
        order = np.lexsort((feats, rows))
        rows, feats, values = rows[order], feats[order], values[order]
    indptr = np.append(np.searchsorted(rows, example_ids), len(rows)).astype(np.int64)
    return SparseLatents(indptr, feats, values, conn.d_sae or 1, example_ids)


def _is_sorted(rows: np.ndarray, feats: np.ndarray) -> bool:
    if len(rows) < 2:
        return True
    d_row, d_feat = np.diff(rows), np.diff(feats.astype(np.int64))
    return bool(np.all((d_row > 0) | ((d_row == 0) & (d_feat > 0))))


def head_weights(conn: Connection) -> tuple[np.ndarray, float]:
    """The ingest head: dense float32 weights ``[d_sae]`` and its bias."""
    with conn.read("reading head weights") as cur:
        got = cur.execute("SELECT weight FROM head_weights ORDER BY feature_id").fetchnumpy()
    return np.asarray(got["weight"], dtype=np.float32), float(conn.meta().get("head_bias", 0.0))


def search_examples(conn: Connection, text: str, limit: int = 1000) -> np.ndarray:
    """Ids of examples whose prompt or response contains ``text`` (case-insensitive, literal)."""
    query = check_str(text, "search text", max_chars=500, allow_empty=False)
    limit = check_int(limit, "limit", low=1, high=MAX_ROWS + 1)
    with conn.read("searching examples") as cur:
        got = cur.execute(
            """SELECT example_id FROM examples
               WHERE contains(lower(prompt), lower($q)) OR contains(lower(response), lower($q))
               ORDER BY example_id LIMIT $limit""",
            {"q": query, "limit": limit},
        ).fetchall()
    return np.asarray([row[0] for row in got], dtype=np.int64)


def example_texts(conn: Connection, example_ids: list[int]) -> pd.DataFrame:
    """``example_id, prompt, response`` of the given examples (at most 5,000), by id."""
    ids = [check_int(e, "example_ids[]", low=0) for e in example_ids]
    if len(ids) > 5000:
        raise ValueError(f"ask for at most 5000 examples at once, got {len(ids)}")
    with conn.read("reading example texts") as cur:
        return small_frame(
            cur,
            """SELECT example_id, prompt, response FROM examples
               WHERE list_contains($ids::BIGINT[], example_id) ORDER BY example_id""",
            {"ids": ids},
        )


def revision(conn: Connection) -> tuple[int, int]:
    """``(newest label id, number of head versions)``: changes whenever either is added.

    Readers that cache label- or head-dependent results key their caches on it.
    Both live in the annotations database, which other processes may write.
    """
    return conn.annotations.label_revision(), conn.annotations.n_heads()
