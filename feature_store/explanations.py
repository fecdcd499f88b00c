"""Explanations in the store: evidence windows for explainers, the stats explainer, history.

Explanations are append-only rows of the annotations database (``explanations``,
annotations schema 2). :func:`explanations` shows the latest per feature and source;
:func:`display_explanations` the one shown per feature: a human label always wins
(it is never overwritten: explainers only append their own rows), then a human
explanation, then the best-scored LLM one, then ``stats``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from feature_store.connection import Connection
from feature_store.errors import StoreError
from feature_store.evidence import MATCHED_SPLITS, draw_matched_negatives
from feature_store.explanation_scores import ScoreReport, rule_scores, score_report
from feature_store.sqlutil import fetch_one
from sarm.explain.stats import (
    VERSION,
    Background,
    Contrastive,
    MetaShare,
    StatsExplanation,
    legacy_explanation,
    stats_explanation,
)
from sarm.explain.types import EvidenceWindow, Explanation
from sarm.residual import ERROR_NAME

logger = logging.getLogger(__name__)

COLUMNS = ["feature", "text", "source", "version", "score", "monosemanticity", "created_at"]


# ------------------------------------------------------------------ windows


def _window(example_id, tokens, start, acts, peak, scored, active, length=None) -> EvidenceWindow:
    """An :class:`EvidenceWindow` of the response tokens ``start .. start + len(acts) - 1``
    (``tokens``: those tokens only) of a response of ``length`` tokens."""
    stop = start + len(acts)
    return EvidenceWindow(
        example_id=int(example_id),
        tokens=tuple(tokens),
        activations=tuple(float(a) for a in acts),
        active=active,
        peak=peak - start if peak is not None and start <= peak < stop else None,
        scored=scored - start if start <= scored < stop else None,
        offset=int(start),
        length=None if length is None else int(length),
    )


def window_size(cur) -> int:
    row = fetch_one(cur, "SELECT max(window_size) FROM evidence_chunks")
    if row is None or row[0] is None:
        raise StoreError("this store holds no feature evidence; re-index it with evidence on")
    return int(row[0])


SPLITS = ("explain", "heldout", "matched", "contrast")
SCORED_SPLITS = SPLITS[:3]  # what a stats explanation is written from and scored on

#: a negative window's seeded centre: (example_id x this + feature_id x the next) % length
NEGATIVE_MUL_EXAMPLE, NEGATIVE_MUL_FEATURE = 2654435761, 40503


def split_windows(
    conn: Connection, split: str, features: Sequence[int] | None = None
) -> dict[int, list[EvidenceWindow]]:
    """Per feature, its ``explain``, ``heldout``, ``matched`` or ``contrast`` windows
    (positives, then negatives).

    ``matched`` is the held-out positives with the source-matched negatives (migration
    009: same source, subset and length bin as a positive where the store has them);
    ``contrast`` is the explain positives with theirs, drawn the same way.
    A negative (a response where the feature is not active at the scored token)
    is the window around a seeded position of its response (a matched one: its
    positive's peak position); its activations were not recorded and read as 0.
    Only the windows' tokens are read, never whole responses (millions of windows
    at the released model's shape).
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: the store keeps {', '.join(SPLITS)} windows")
    params: dict[str, object] = {"split": split, "positives": MATCHED_SPLITS.get(split, "")}
    where = ""
    if features is not None:
        ids = sorted({int(f) for f in features})
        if not ids:
            return {}
        # a constant range lets the zone maps skip to the features (the table is in
        # feature order); the list then picks them out of the range
        where = "AND feature_id BETWEEN $lo AND $hi AND list_contains($features, feature_id)"
        params |= {"features": ids, "lo": ids[0], "hi": ids[-1]}
    with conn.read(f"reading {split} windows") as cur:
        params["width"] = window_size(cur)
        rows = cur.execute(
            f"""WITH s AS (
                    SELECT * FROM feature_window_splits
                    WHERE (split = $split OR (split = $positives AND active))
                          {where}),
                joined AS (
                    SELECT s.*, r.scored, r.tokens, len(r.tokens) AS n,
                           coalesce(s.centre, CAST((s.example_id::HUGEINT * {NEGATIVE_MUL_EXAMPLE}
                                 + s.feature_id::HUGEINT * {NEGATIVE_MUL_FEATURE})
                                % len(r.tokens) AS BIGINT)) AS centre
                    FROM s JOIN evidence_responses r USING (example_id)),
                bounded AS (
                    SELECT *,
                           CASE WHEN active THEN start
                                ELSE greatest(0, centre - $width) END AS lo,
                           CASE WHEN active THEN start + len(activations)
                                ELSE least(n, centre + $width + 1) END AS hi
                    FROM joined)
                SELECT feature_id, example_id, active, lo, hi, activations, peak, scored,
                       tokens[lo + 1 : hi], n
                FROM bounded
                ORDER BY feature_id, NOT active, example_id""",
            params,
        ).fetchall()
    out: dict[int, list[EvidenceWindow]] = defaultdict(list)
    for fid, ex, active, lo, hi, acts, peak, scored, tokens, n in rows:
        if not active:
            acts = [0.0] * (hi - lo)
        out[fid].append(_window(ex, tokens, lo, acts, peak, scored, active, n))
    return dict(out)


def example_metadata(conn: Connection) -> dict[int, dict[str, str]]:
    """Per example: ``source`` (the group id's prefix), ``subset`` and ``role``."""
    with conn.read("reading example metadata") as cur:
        rows = cur.execute(
            """SELECT example_id, split_part(group_id, '/', 1), coalesce(subset, '(none)'), role
               FROM examples"""
        ).fetchall()
    return {r[0]: {"source": r[1], "subset": r[2], "role": r[3]} for r in rows}


# ------------------------------------------------------------------ the stats explainer


@dataclass(frozen=True)
class ExplainReport:
    n_features: int
    n_explained: int
    n_scored: int
    median_score: float | None
    seconds: float
    scores: ScoreReport | None = None
    n_without_text: int = 0  # asked, but the reply held no explanation (nothing stored)

    def summary(self) -> str:
        median = "n/a" if self.median_score is None else f"{self.median_score:.3f}"
        empty = f"; {self.n_without_text} replies held no text" if self.n_without_text else ""
        return (
            f"explained {self.n_explained} of {self.n_features} features that fire "
            f"({self.n_scored} scored, median detection score {median}){empty} "
            f"in {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, object]:
        out = {k: v for k, v in self.__dict__.items() if k != "scores"}
        return out | {"scores": self.scores.to_dict() if self.scores else None}


def firing_features(conn: Connection) -> list[int]:
    """SAE features active at the scored token of at least one stored response.

    The SAE-error column (:mod:`sarm.residual`) is not an SAE feature: never listed.
    """
    with conn.read("listing firing features") as cur:
        rows = cur.execute(
            "SELECT feature_id FROM feature_stats WHERE n_active > 0 AND feature_id != ? ORDER BY 1",
            [_not_a_feature(conn)],
        ).fetchall()
    return [r[0] for r in rows]


def _not_a_feature(conn: Connection) -> int:
    """The SAE-error column's id, or -1 (no feature has it) when the model has none."""
    error = conn.error_feature
    return -1 if error is None else int(error)


def top_weight_features(conn: Connection, n: int) -> list[int]:
    """The ``n`` features that fire with the largest |head weight| (ties by id)."""
    if n < 1:
        raise ValueError(f"top {n} features by head weight: give a positive count")
    with conn.read("ranking firing features by head weight") as cur:
        rows = cur.execute(
            """SELECT feature_id FROM feature_stats WHERE n_active > 0 AND feature_id != ?
               ORDER BY abs(weight) DESC, feature_id LIMIT ?""",
            [_not_a_feature(conn), int(n)],
        ).fetchall()
    return sorted(r[0] for r in rows)


def _contrastive_rows(conn: Connection) -> dict[int, list[Contrastive]]:
    with conn.read("reading contrastive tokens") as cur:
        rows = cur.execute(
            """SELECT feature_id, text, kind, active_count, background_count, ratio
               FROM feature_contrastive ORDER BY feature_id, kind, rank"""
        ).fetchall()
    out: dict[int, list[Contrastive]] = defaultdict(list)
    for fid, *rest in rows:
        out[fid].append(Contrastive(*rest))
    return out


def metadata_rows(conn: Connection) -> dict[int, list[MetaShare]]:
    with conn.read("reading metadata shares") as cur:
        rows = cur.execute(
            """SELECT feature_id, field, value, n_active, share, lift, chosen, rejected,
                      preference_score
               FROM feature_metadata ORDER BY feature_id, field, n_active DESC"""
        ).fetchall()
    out: dict[int, list[MetaShare]] = defaultdict(list)
    for fid, *rest in rows:
        out[fid].append(MetaShare(*rest))
    return out


def evidence_hash(*parts: object) -> str:
    blob = json.dumps(parts, default=repr, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


#: features whose held-out windows are read at once (bounds memory at 65k features)
WINDOW_BATCH = 4096
#: responses sampled (one window each, at a seeded position) for the traits' base rates
BACKGROUND_WINDOWS = 2000


def background_windows(
    conn: Connection, n: int = BACKGROUND_WINDOWS, seed: int = 0, at_end: bool = False
) -> tuple[list[EvidenceWindow], list[int]]:
    """Windows at seeded positions (``at_end``: at the scored token) of ``n`` seeded
    responses, and each one's centre index (what the ``stats`` explainer's traits and
    context tokens are measured against)."""
    with conn.read("reading background windows") as cur:
        width = window_size(cur)
        rows = cur.execute(
            """WITH pick AS (
                   SELECT example_id, tokens, scored, len(tokens) AS n,
                          CASE WHEN $at_end THEN scored
                               ELSE CAST(hash(example_id, $seed) % len(tokens) AS BIGINT)
                          END AS centre
                   FROM evidence_responses ORDER BY hash(example_id, $seed + 1) LIMIT $n),
               bounded AS (
                   SELECT *, greatest(0, centre - $width) AS lo,
                          least(n, centre + $width + 1) AS hi FROM pick)
               SELECT example_id, lo, hi, centre, scored, n, tokens[lo + 1 : hi]
               FROM bounded ORDER BY example_id""",
            {"seed": int(seed), "n": int(n), "width": width, "at_end": bool(at_end)},
        ).fetchall()
    windows = [
        _window(ex, toks, lo, [0.0] * (hi - lo), None, scored, False, length)
        for ex, lo, hi, _, scored, length, toks in rows
    ]
    return windows, [centre - lo for _, lo, _, centre, *_ in rows]


def ensure_matched_negatives(conn: Connection) -> bool:
    """Draw the source-matched negatives (``matched``, ``contrast``) of a store that lacks them.

    Returns whether the store has them (a read-only store that lacks them cannot).
    """
    with conn.read("checking for matched negatives") as cur:
        have = fetch_one(
            cur,
            """SELECT count(*) FILTER (WHERE split = 'matched'),
                      count(*) FILTER (WHERE split = 'contrast'),
                      count(*) FILTER (WHERE split = 'heldout' AND active)
               FROM feature_window_splits""",
        )
    if (have[0] and have[1]) or not have[2]:
        return bool(have[0])
    if have[0] and conn.read_only:  # scores work; the text ceiling cannot
        logger.warning(
            "%s has no contrast windows (refreshed before the text ceiling): open it "
            "writable to draw them, or every text ceiling reads as not measured",
            conn.path,
        )
        return True
    if conn.read_only:
        logger.warning(
            "%s has no source-matched negatives (refreshed before schema 9); open it "
            "writable or refresh its statistics to score explanations controlled for source",
            conn.path,
        )
        return False
    with conn.write("drawing source-matched negatives") as cur:
        n = draw_matched_negatives(cur)
    logger.info("drew %d source-matched negatives", n)
    return True


def explain_stats(
    conn: Connection, features: Sequence[int] | None = None, progress: bool = False
) -> tuple[list[Explanation], ExplainReport]:
    """Write and score a ``stats`` explanation for ``features`` (default: all that fire).

    ``score`` is the detection score on source-matched negatives; ``details["scores"]``
    holds it beside the uncontrolled one (negatives from a seeded pool of any source) and the
    fuzzing score. The report compares them with the ``stats-1`` explainer's.
    """
    start = time.perf_counter()
    wanted = firing_features(conn) if features is None else [int(f) for f in features]
    wanted = [f for f in wanted if f != conn.error_feature]  # the SAE error is not a feature
    ensure_matched_negatives(conn)
    contrastive, metadata = _contrastive_rows(conn), metadata_rows(conn)
    meta = example_metadata(conn)
    background = Background.of(*background_windows(conn))
    end_background = Background.of(*background_windows(conn, at_end=True))
    out, legacy = [], []
    for lo in tqdm(
        range(0, len(wanted), WINDOW_BATCH), desc="explaining", disable=not progress, unit="batch"
    ):
        batch = wanted[lo : lo + WINDOW_BATCH]
        windows = {s: split_windows(conn, s, batch) for s in SCORED_SPLITS}
        for fid in batch:
            ws = {s: windows[s].get(fid, []) for s in SCORED_SPLITS}
            found = stats_explanation(
                contrastive.get(fid, []),
                ws["explain"],
                metadata.get(fid, []),
                background,
                end_background,
            )
            scores = rule_scores(found, ws, meta)
            digest = evidence_hash(contrastive.get(fid, []), metadata.get(fid, []))
            out.append(_explanation(fid, found, scores, digest))
            old = legacy_explanation(contrastive.get(fid, []), metadata.get(fid, []))
            legacy.append((old.text, rule_scores(old, ws, meta)))
    scores = [e.score for e in out if e.score is not None]
    report = ExplainReport(
        len(wanted),
        len(out),
        len(scores),
        float(np.median(scores)) if scores else None,
        time.perf_counter() - start,
        score_report(out, legacy),
    )
    return out, report


def _explanation(
    fid: int, found: StatsExplanation, scores: dict[str, object], digest: str
) -> Explanation:
    """The ``stats`` row: scored by detection on source-matched negatives."""
    score = scores["controlled"]
    details = {**found.details, "n_heldout": scores["n_positives"] + scores["n_matched_negatives"]}
    details["scores"] = scores
    return Explanation(fid, found.text, "stats", VERSION, score, None, digest, details)


def save_explanations(conn: Connection, explanations: Iterable[Explanation]) -> int:
    """Append explanations (never replacing any row: history is kept)."""
    explanations = list(explanations)
    for e in explanations:
        _check(e.feature_id, e.text, e.source, conn.d_sae)
    rows = [
        (
            e.feature_id,
            e.text,
            e.source,
            e.version,
            e.score,
            e.monosemanticity,
            e.evidence_hash,
            json.dumps(e.details, sort_keys=True, default=str),
        )
        for e in explanations
    ]
    return conn.annotations.add_explanations(rows, datetime.now()) if rows else 0


def _check(fid: int, text: str, source: str, d_sae: int | None) -> None:
    if d_sae is not None and not 0 <= fid < d_sae:
        raise ValueError(f"explanation of feature {fid}: the store has features 0..{d_sae - 1}")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"explanation of feature {fid}: empty text")
    if source not in ("stats", "human") and not source.startswith("llm:"):
        raise ValueError(
            f"explanation of feature {fid}: source {source!r} must be stats, human or llm:<model>"
        )


# ------------------------------------------------------------------ reading


def explanation_history(conn: Connection, feature_id: int) -> pd.DataFrame:
    """Every explanation version of one feature, newest first."""
    return _renamed(conn.annotations.explanation_rows(int(feature_id)))


def explanations(conn: Connection) -> pd.DataFrame:
    """The latest explanation per feature and source: ``feature, text, source, score, ...``."""
    latest = conn.annotations.latest_explanations()
    if latest.empty:
        return pd.DataFrame(columns=COLUMNS)
    return _renamed(latest)


def _renamed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.rename(columns={"feature_id": "feature"})
    frame["details"] = frame["details"].map(json.loads) if len(frame) else frame["details"]
    return frame


_PRIORITY = {"label": 0, "human": 1, "llm": 2, "stats": 2}
SHOWN_COLUMNS = ["feature", "text", "source", "score", "fuzzing", "ceiling"]


def display_explanations(conn: Connection) -> pd.DataFrame:
    """One row per feature: what the app shows (``feature, text, source, score, fuzzing,
    ceiling``).

    A human label (the label editor) wins, then a human explanation, then the
    machine explanation (``llm:*`` or ``stats``) with the best detection score
    (``score``, on source-matched negatives); ``fuzzing`` is its fuzzing score where
    it has one; ``ceiling`` the text ceiling stored with it (``sarm.explain.ceiling``:
    what any text explanation of the feature's windows reached), where measured.
    """
    shown = conn.annotations.latest_explanations(
        ["feature_id", "text", "source", "score", "fuzzing", "ceiling"]
    )
    frame = shown.rename(columns={"feature_id": "feature"})
    labels = conn.annotations.latest_labels().to_pandas()
    if len(labels):
        human = pd.DataFrame(
            {
                "feature": labels["feature_id"],
                "text": labels["label"],
                "source": "label",
                "score": np.nan,
                "fuzzing": np.nan,
                "ceiling": np.nan,
            }
        )
        frame = pd.concat([human, frame], ignore_index=True)
    if frame.empty:
        return pd.DataFrame(columns=SHOWN_COLUMNS)
    frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    frame["fuzzing"] = pd.to_numeric(frame["fuzzing"], errors="coerce")
    frame["ceiling"] = pd.to_numeric(frame["ceiling"], errors="coerce")
    frame["rank"] = frame["source"].map(lambda s: _PRIORITY.get(s.split(":")[0], 9))
    frame["llm_first"] = ~frame["source"].str.startswith("llm")
    frame = frame.sort_values(
        ["feature", "rank", "score", "llm_first"],
        ascending=[True, True, False, True],
        na_position="last",
    )
    shown = frame.groupby("feature").head(1).drop(columns=["rank", "llm_first"])
    return shown.reset_index(drop=True)[SHOWN_COLUMNS]


def titles_for(conn: Connection, feature_ids: Sequence[int]) -> dict[int, str]:
    """What a feature is called wherever it appears: its label, else its best explanation
    with the explanation's detection score, e.g. ```I can't` · safety (0.82)``."""
    wanted = {int(f) for f in feature_ids}
    if not wanted:
        return {}
    shown = display_explanations(conn)
    shown = shown[shown["feature"].isin(wanted)]
    out = {}
    for fid, text, source, score in shown[["feature", "text", "source", "score"]].itertuples(
        index=False
    ):
        scored = source != "label" and score == score and score is not None
        out[int(fid)] = f"{text} ({score:.2f})" if scored else str(text)
    error = conn.error_feature
    if error in wanted and not _labelled(shown, error):
        out[error] = ERROR_NAME  # what no feature explains; only a human label renames it
    return out


def _labelled(shown: pd.DataFrame, fid: int) -> bool:
    rows = shown[shown["feature"] == fid]
    return bool(len(rows)) and bool((rows["source"] == "label").any())


def run_stats_explainer(
    conn: Connection,
    features: Sequence[int] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> ExplainReport:
    """Explain, score and save; the report's summary goes to ``log`` (default: logging)."""
    found, report = explain_stats(conn, features, progress)
    save_explanations(conn, found)
    (log or logger.info)(report.summary())
    return report


def contrastive_texts(conn: Connection) -> dict[int, list[str]]:
    """Per feature, its contrastive tokens and bigrams as ``text (count, xratio)`` lines."""
    return {
        fid: [f"{c.text!r} ({c.active_count} active, x{c.ratio:.1f})" for c in rows]
        for fid, rows in _contrastive_rows(conn).items()
    }


def with_score(explanation: Explanation, score: float | None, n_heldout: int) -> Explanation:
    """``explanation`` with its detection score (and how many windows scored it)."""
    return replace(
        explanation, score=score, details={**explanation.details, "n_heldout": n_heldout}
    )
