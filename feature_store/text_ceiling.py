"""Per feature, the text ceiling of its explanations' detection score (``sarm.explain.ceiling``).

Fitted on the store's ``contrast`` windows (explain positives against their
source-matched negatives) and measured on its ``matched`` ones (held-out positives
against theirs), so it is judged exactly as an explanation's controlled detection is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from tqdm.auto import tqdm

from feature_store.connection import Connection
from feature_store.explanations import (
    WINDOW_BATCH,
    ensure_matched_negatives,
    save_explanations,
    split_windows,
)
from sarm.explain.ceiling import text_ceiling
from sarm.explain.scoring import Distribution
from sarm.explain.types import Explanation


def text_ceilings(
    conn: Connection, features: Sequence[int], progress: bool = False
) -> dict[int, float | None]:
    """Per feature of ``features``, the held-out balanced accuracy of the presence
    classifier (None where a split lacks a class: a feature seen in one response)."""
    ensure_matched_negatives(conn)
    wanted = [int(f) for f in features if int(f) != conn.error_feature]
    out: dict[int, float | None] = {}
    for lo in tqdm(range(0, len(wanted), WINDOW_BATCH), desc="text ceiling", disable=not progress):
        batch = wanted[lo : lo + WINDOW_BATCH]
        train, test = split_windows(conn, "contrast", batch), split_windows(conn, "matched", batch)
        for fid in batch:
            out[fid] = text_ceiling(train.get(fid, []), test.get(fid, []))
    return out


def ceiling_line(ceilings: dict[int, float | None]) -> str:
    """One line for the report: the ceilings' distribution."""
    return (
        "text ceiling (a token-presence classifier fitted on the explain windows against "
        f"source-matched negatives, detection on the held-out ones): "
        f"{Distribution.of(list(ceilings.values())).line()}"
    )


def with_ceilings(
    found: Sequence[Explanation], ceilings: dict[int, float | None]
) -> list[Explanation]:
    """``found`` with each feature's ceiling in ``details["scores"]["ceiling"]`` (shown
    beside the explanation's own scores)."""
    out = []
    for e in found:
        scores = {**e.details.get("scores", {}), "ceiling": ceilings.get(e.feature_id)}
        out.append(replace(e, details={**e.details, "scores": scores}))
    return out


def save_with_ceilings(
    conn: Connection, found: Sequence[Explanation], progress: bool = False
) -> dict[int, float | None]:
    """Measure the text ceiling of each explained feature, save ``found`` with it
    (:func:`with_ceilings`), and return the ceilings."""
    ceilings = text_ceilings(conn, [e.feature_id for e in found], progress)
    save_explanations(conn, with_ceilings(found, ceilings))
    return ceilings
