"""Feature labels: append-only versions, latest shown, full history kept.

A label is never updated or deleted; ``set_label`` appends a version and the
newest per feature is shown. An empty label is a version too: it clears what
tables show while keeping the history. Labels live in the annotations database
(:mod:`feature_store.annotations`), which many processes write at once; queries
that join them with the DuckDB tables see the latest ones as ``current_labels``
(:meth:`~feature_store.connection.Connection.read_labels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, get_args

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.connection import Connection
from feature_store.sqlutil import small_frame
from feature_store.validate import check_feature_id, check_int, check_str

LabelSource = Literal["human", "auto", "llm", "import"]
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)
HISTORY_COLUMNS = (
    "label_id",
    "feature_id",
    "label",
    "description",
    "author",
    "source",
    "created_at",
)
MAX_LABEL_CHARS = 200
MAX_DESCRIPTION_CHARS = 10_000
MAX_AUTHOR_CHARS = 100


@dataclass(frozen=True)
class LabelVersion:
    """One label version as given by a caller; fields are validated and stripped."""

    feature_id: int
    label: str
    description: str = ""
    author: str = ""
    source: LabelSource = "human"

    def __post_init__(self) -> None:
        check_int(self.feature_id, "feature_id", low=0)
        set_ = object.__setattr__
        set_(self, "label", check_str(self.label, "label", max_chars=MAX_LABEL_CHARS))
        set_(
            self,
            "description",
            check_str(self.description, "description", max_chars=MAX_DESCRIPTION_CHARS),
        )
        set_(self, "author", check_str(self.author, "author", max_chars=MAX_AUTHOR_CHARS))
        if self.source not in LABEL_SOURCES:
            raise ValueError(f"source must be one of {LABEL_SOURCES}, got {self.source!r}")


def set_label(
    conn: Connection,
    feature_id: int,
    label: str,
    description: str = "",
    author: str = "",
    source: str = "human",
) -> int:
    """Append a label version for ``feature_id``; returns the new ``label_id``."""
    version = LabelVersion(feature_id, label, description, author, source)  # type: ignore[arg-type]
    check_feature_id(version.feature_id, conn.d_sae)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    row = (version.feature_id, version.label, version.description, version.author, version.source)
    return conn.annotations.add_label(row, now)


def label_history(conn: Connection, feature_id: int) -> pd.DataFrame:
    """Every version of ``feature_id``'s label, newest first."""
    fid = check_feature_id(feature_id, conn.d_sae)
    return conn.annotations.label_history(fid)


def search_labels(conn: Connection, text: str, limit: int = 100) -> pd.DataFrame:
    """Features whose latest label or description contains ``text`` (case-insensitive).

    Label matches come first, then description-only matches, each by feature id.
    """
    query = check_str(text, "search text", max_chars=500, allow_empty=False)
    limit = check_int(limit, "limit", low=1, high=100_001)
    with conn.read_labels("searching labels") as cur:
        return small_frame(
            cur,
            """SELECT l.feature_id, l.label, l.description, l.author, l.source, l.created_at,
                      s.weight, s.frequency, s.mean_contribution,
                      contains(lower(l.label), lower($q)) AS in_label
               FROM current_labels l LEFT JOIN feature_stats s USING (feature_id)
               WHERE l.label <> ''
                 AND (contains(lower(l.label), lower($q)) OR contains(lower(l.description), lower($q)))
               ORDER BY in_label DESC, l.feature_id
               LIMIT $limit""",
            {"q": query, "limit": limit},
        )


def labels_frame(conn: Connection, *, all_versions: bool = False) -> pd.DataFrame:
    """The latest non-empty label of every feature, or every version ever written."""
    if all_versions:
        return conn.annotations.all_labels()
    latest = conn.annotations.latest_labels()
    frame = latest.filter(pc.not_equal(latest["label"], "")).to_pandas()
    return frame[list(HISTORY_COLUMNS)].reset_index(drop=True)


def labels_for(conn: Connection, feature_ids: Sequence[int]) -> dict[int, str]:
    """``{feature_id: latest label}`` for those of ``feature_ids`` that have a label."""
    ids = [check_int(f, "feature_ids[]", low=0) for f in feature_ids]
    if not ids:
        return {}
    latest = conn.annotations.latest_labels()
    fids = pc.cast(latest["feature_id"], pa.int64())
    picked = latest.filter(pc.is_in(fids, value_set=pa.array(ids, pa.int64())))
    pairs = zip(picked["feature_id"].to_pylist(), picked["label"].to_pylist(), strict=True)
    return {int(f): str(label) for f, label in pairs if label}
