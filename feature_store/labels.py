"""Feature labels: append-only versions, latest shown, full history kept.

A label is never updated or deleted; ``set_label`` appends a version and the
``latest_labels`` view picks the newest per feature. An empty label is a
version too: it clears what tables show while keeping the history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal, get_args

import pandas as pd

from feature_store.connection import Connection
from feature_store.sqlutil import fetch_one, large_frame, small_frame
from feature_store.validate import check_feature_id, check_int, check_str

LabelSource = Literal["human", "auto", "llm", "import"]
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)
MAX_LABEL_CHARS = 200
MAX_DESCRIPTION_CHARS = 10_000
MAX_AUTHOR_CHARS = 100

HISTORY_COLUMNS = "label_id, feature_id, label, description, author, source, created_at"


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
    with conn.write(f"labelling feature {version.feature_id}") as cur:
        row = fetch_one(
            cur,
            """INSERT INTO labels (feature_id, label, description, author, source, created_at)
               VALUES (?, ?, ?, ?, ?, ?) RETURNING label_id""",
            [
                version.feature_id,
                version.label,
                version.description,
                version.author,
                version.source,
                now,
            ],
        )
    return int(row[0])


def label_history(conn: Connection, feature_id: int) -> pd.DataFrame:
    """Every version of ``feature_id``'s label, newest first."""
    fid = check_feature_id(feature_id, conn.d_sae)
    with conn.read("reading label history") as cur:
        return small_frame(
            cur,
            f"SELECT {HISTORY_COLUMNS} FROM labels WHERE feature_id = ? ORDER BY label_id DESC",
            [fid],
        )


def search_labels(conn: Connection, text: str, limit: int = 100) -> pd.DataFrame:
    """Features whose latest label or description contains ``text`` (case-insensitive).

    Label matches come first, then description-only matches, each by feature id.
    """
    query = check_str(text, "search text", max_chars=500, allow_empty=False)
    limit = check_int(limit, "limit", low=1, high=100_001)
    with conn.read("searching labels") as cur:
        return small_frame(
            cur,
            """SELECT l.feature_id, l.label, l.description, l.author, l.source, l.created_at,
                      s.weight, s.frequency, s.mean_contribution,
                      contains(lower(l.label), lower($q)) AS in_label
               FROM latest_labels l LEFT JOIN feature_stats s USING (feature_id)
               WHERE l.label <> ''
                 AND (contains(lower(l.label), lower($q)) OR contains(lower(l.description), lower($q)))
               ORDER BY in_label DESC, l.feature_id
               LIMIT $limit""",
            {"q": query, "limit": limit},
        )


def labels_frame(conn: Connection, *, all_versions: bool = False) -> pd.DataFrame:
    """The latest non-empty label of every feature, or every version ever written."""
    sql = (
        f"SELECT {HISTORY_COLUMNS} FROM labels ORDER BY label_id"
        if all_versions
        else f"SELECT {HISTORY_COLUMNS} FROM latest_labels WHERE label <> '' ORDER BY feature_id"
    )
    with conn.read("listing labels") as cur:
        return large_frame(cur, sql)


def labels_for(conn: Connection, feature_ids: Sequence[int]) -> dict[int, str]:
    """``{feature_id: latest label}`` for those of ``feature_ids`` that have a label."""
    ids = [check_int(f, "feature_ids[]", low=0) for f in feature_ids]
    if not ids:
        return {}
    with conn.read("reading labels") as cur:
        rows = cur.execute(
            """SELECT feature_id, label FROM latest_labels
               WHERE label <> '' AND list_contains($ids::INTEGER[], feature_id)""",
            {"ids": ids},
        ).fetchall()
    return {int(f): str(label) for f, label in rows}
