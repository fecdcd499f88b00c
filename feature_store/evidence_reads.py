"""What a feature page shows of a feature's evidence: stored rows only, never a model.

:func:`feature_evidence` reads migration 006's tables (filled by the indexing forward
pass and the statistics refresh); ``tests/store/test_evidence.py`` checks that it
runs with no model loaded and no forward pass.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from feature_store.connection import Connection
from feature_store.evidence import has_evidence
from feature_store.explanations import split_windows
from feature_store.sqlutil import small_frame as frame
from sarm.explain.evidence import HIST_EDGES


def feature_evidence(conn: Connection, feature_id: int) -> dict[str, Any]:
    """Windows (strongest first), density and histogram, contrastive tokens, metadata,
    decoder views and the reward link of one feature (empty parts when not stored)."""
    fid = int(feature_id)
    with conn.read("checking for feature evidence") as cur:
        stored = has_evidence(cur)
    windows = split_windows(conn, "explain", [fid]).get(fid, []) if stored else []
    windows.sort(key=lambda w: -max(w.activations, default=0.0))
    seen: set[tuple[str, ...]] = set()  # the same response text in several examples: once
    windows = [w for w in windows if not (w.tokens in seen or seen.add(w.tokens))]
    with conn.read(f"reading the evidence of feature {fid}") as cur:
        density = frame(cur, "SELECT * FROM feature_density WHERE feature_id = ?", [fid])
        contrastive = frame(
            cur,
            """SELECT kind, rank, text, active_count, active_total, background_count,
                      background_total, ratio
               FROM feature_contrastive WHERE feature_id = ? ORDER BY kind DESC, rank""",
            [fid],
        )
        metadata = frame(
            cur,
            """SELECT field, value, n_active, n_total, share, lift, chosen, rejected,
                      preference_score
               FROM feature_metadata WHERE feature_id = ? ORDER BY field, n_active DESC""",
            [fid],
        )
        decoder = frame(
            cur,
            """SELECT kind, rank, text, neighbour, value FROM feature_decoder
               WHERE feature_id = ? ORDER BY kind, rank""",
            [fid],
        )
        reward = frame(
            cur,
            """SELECT s.weight, s.mean_contribution, d.abs_contribution_share
               FROM feature_stats s LEFT JOIN feature_density d USING (feature_id)
               WHERE s.feature_id = ?""",
            [fid],
        )
    note = conn.meta().get("decoder_note", "")
    return {
        "windows": windows,
        "density": density.iloc[0].to_dict() if len(density) else {},
        "histogram": _histogram(density),
        "contrastive": contrastive,
        "metadata": metadata,
        "decoder": decoder,
        "decoder_note": note,
        "reward": reward.iloc[0].to_dict() if len(reward) else {},
    }


def _histogram(density: pd.DataFrame) -> pd.DataFrame:
    """Per-token activation counts per log-spaced bin (``low``, ``high``, ``count``)."""
    if not len(density):
        return pd.DataFrame(columns=["low", "high", "count"])
    counts = list(density.iloc[0]["histogram"])
    edges = [float("-inf"), *HIST_EDGES.tolist(), float("inf")]
    return pd.DataFrame({"low": edges[:-1], "high": edges[1:], "count": counts})
