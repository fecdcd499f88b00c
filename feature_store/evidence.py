"""Feature evidence in the store: written with each chunk, aggregated by the stats refresh.

The indexing forward pass (``SARM.pooled_latents(..., evidence=EvidenceSpec())``)
yields per response its tokens and, per feature active at the scored token, a
window around the feature's peak; plus per-chunk token counters. :func:`chunk_evidence`
lays them out as rows that :func:`feature_store.chunks.write_chunk` commits in the
chunk's own transaction (so a resumed or extended index adds evidence chunk by chunk).

:func:`refresh_evidence` (run inside the statistics refresh transaction) rewrites the
aggregates of migration 006: density and histogram, contrastive tokens and bigrams of
the explanation windows against a seeded background sample, metadata shares with the
SARM preference score, the reward link, and the seeded, disjoint explanation /
held-out window splits that explainers and their scores read.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feature_store.sqlutil import fetch_one, insert_arrow
from sarm.explain.evidence import N_BINS, counters_table, evidence_tables

logger = logging.getLogger(__name__)

EVIDENCE_TABLES = ("evidence_responses", "evidence_windows", "evidence_chunks", "evidence_counts")
AGGREGATE_TABLES = (
    "feature_density",
    "feature_contrastive",
    "feature_metadata",
    "feature_window_splits",
)
METADATA_FIELDS = ("source", "subset", "role")


@dataclass(frozen=True)
class EvidenceConfig:
    """How the aggregates are drawn: sizes of samples and splits, and the seed."""

    seed: int = 0
    background_tokens: int = 20_000
    explain_top: int = 20
    explain_spread: int = 12
    heldout: int = 20
    negative_pool: int = 400
    matched_pool: int = 64
    top_contrastive: int = 8
    min_count: int = 2


@dataclass(frozen=True)
class ChunkEvidence:
    """The evidence rows of one chunk (committed with it)."""

    responses: pa.Table
    windows: pa.Table
    counts: pa.Table
    n_tokens: int
    n_responses: int
    window: int

    def totals(self) -> dict[str, int]:
        """The pass totals (everything but the tables), JSON-ready."""
        return {"n_tokens": self.n_tokens, "n_responses": self.n_responses, "window": self.window}

    @classmethod
    def from_tables(
        cls, responses: pa.Table, windows: pa.Table, counts: pa.Table, totals: dict
    ) -> ChunkEvidence:
        """The inverse of the three tables and :meth:`totals`."""
        return cls(
            responses,
            windows,
            counts,
            int(totals["n_tokens"]),
            int(totals["n_responses"]),
            int(totals["window"]),
        )


def chunk_evidence(example_ids: np.ndarray, pooled, window: int) -> ChunkEvidence:
    """Rows of one chunk's evidence from a ``pooled_latents(..., evidence=...)`` result."""
    if pooled.evidence is None or pooled.counters is None:
        raise ValueError("the model returned no evidence; pass evidence=EvidenceSpec(...)")
    responses, windows = evidence_tables(example_ids, pooled.evidence)
    return ChunkEvidence(
        responses,
        windows,
        counters_table(pooled.counters),
        pooled.counters.n_tokens,
        pooled.counters.n_responses,
        window,
    )


def insert_evidence(cur, chunk_index: int, evidence: ChunkEvidence) -> None:
    """Add one chunk's evidence rows (inside the chunk's transaction)."""
    insert_arrow(cur, "evidence_responses", evidence.responses)
    insert_arrow(cur, "evidence_windows", evidence.windows)
    counts = evidence.counts.append_column(
        "chunk_index", pa.array(np.full(evidence.counts.num_rows, chunk_index, np.int32))
    )
    insert_arrow(cur, "evidence_counts", counts)
    cur.execute(
        "INSERT INTO evidence_chunks VALUES (?, ?, ?, ?)",
        [chunk_index, evidence.n_tokens, evidence.n_responses, evidence.window],
    )


def has_evidence(cur) -> bool:
    return bool(fetch_one(cur, "SELECT count(*) FROM evidence_chunks")[0])


# ------------------------------------------------------------------ aggregates


def refresh_evidence(cur, d_sae: int, config: EvidenceConfig = EvidenceConfig()) -> None:
    """Rewrite the evidence aggregates (empty when the store holds no evidence)."""
    for table in AGGREGATE_TABLES:
        cur.execute(f"DELETE FROM {table}")
    if not has_evidence(cur):
        return
    _density(cur, d_sae)
    cur.execute(METADATA_SQL, {"fields": list(METADATA_FIELDS)})
    cur.execute(
        SPLITS_SQL,
        {
            "seed": config.seed,
            "heldout": config.heldout,
            "top": config.explain_top,
            "spread": config.explain_spread,
        },
    )
    cur.execute(NEGATIVES_SQL, {"seed": config.seed, "pool": config.negative_pool})
    draw_matched_negatives(cur, config)
    _contrastive(cur, config)
    logger.info("feature evidence aggregated")


def _density(cur, d_sae: int) -> None:
    n_tokens, n_responses = fetch_one(
        cur, "SELECT sum(n_tokens), sum(n_responses) FROM evidence_chunks"
    )
    # summed in SQL: one row per chunk x feature is millions of rows at the released shape
    counts = cur.execute(
        """SELECT feature_id, sum(active_tokens)::BIGINT AS t, sum(active_responses)::BIGINT AS r
           FROM evidence_counts GROUP BY feature_id"""
    ).fetchnumpy()
    fids = np.asarray(counts["feature_id"], np.int64)
    active_tokens = np.zeros(d_sae, np.int64)
    active_resp = np.zeros(d_sae, np.int64)
    active_tokens[fids], active_resp[fids] = counts["t"], counts["r"]
    bins = cur.execute(
        """SELECT feature_id, bin - 1 AS bin, sum(n)::BIGINT AS n
           FROM (SELECT feature_id, generate_subscripts(histogram, 1) AS bin,
                        unnest(histogram) AS n
                 FROM evidence_counts)
           GROUP BY ALL"""
    ).fetchnumpy()
    hist = np.zeros((d_sae, N_BINS), np.int64)
    hist[np.asarray(bins["feature_id"], np.int64), np.asarray(bins["bin"], np.int64)] = bins["n"]
    share = _abs_share(cur, d_sae)
    table = pa.table(
        {
            "feature_id": np.arange(d_sae, dtype=np.int32),
            "active_tokens": active_tokens,
            "n_tokens": np.full(d_sae, int(n_tokens), np.int64),
            "token_fraction": active_tokens / max(int(n_tokens), 1),
            "active_responses": active_resp,
            "n_responses": np.full(d_sae, int(n_responses), np.int64),
            "response_fraction": active_resp / max(int(n_responses), 1),
            "histogram": [row.tolist() for row in hist],
            "abs_contribution_share": share,
        }
    )
    insert_arrow(cur, "feature_density", table)


def _abs_share(cur, d_sae: int) -> np.ndarray:
    """Each feature's share of the total |contribution| over every stored example."""
    rows = cur.execute(
        "SELECT feature_id, sum(abs(contribution)) FROM contributions GROUP BY 1"
    ).fetchall()
    share = np.zeros(d_sae)
    for fid, total in rows:
        share[fid] = total
    return share / share.sum() if share.sum() > 0 else share


METADATA_SQL = """
INSERT INTO feature_metadata
WITH ex AS (
    SELECT example_id, role, coalesce(subset, '(none)') AS subset,
           split_part(group_id, '/', 1) AS source
    FROM examples),
long AS (
    SELECT example_id, role, 'source' AS field, source AS value FROM ex
    UNION ALL SELECT example_id, role, 'subset', subset FROM ex
    UNION ALL SELECT example_id, role, 'role', role FROM ex),
totals AS (SELECT field, value, count(*) AS n_total FROM long GROUP BY ALL),
n AS (SELECT count(*)::DOUBLE AS n_all FROM examples),
per_feature AS (SELECT feature_id, count(*)::DOUBLE AS n_f FROM latents GROUP BY 1),
act AS (
    SELECT x.feature_id, l.field, l.value, count(*) AS n_active,
           count(*) FILTER (WHERE l.role = 'chosen') AS chosen,
           count(*) FILTER (WHERE l.role = 'rejected') AS rejected
    FROM latents x JOIN long l USING (example_id)
    WHERE list_contains($fields, l.field)
    GROUP BY ALL),
scored AS (
    SELECT a.*, t.n_total, a.n_active / f.n_f AS share,
           (a.n_active / f.n_f) / (t.n_total / n.n_all) AS lift,
           avg(a.chosen + a.rejected) OVER (PARTITION BY a.field, a.value) AS mean_cj
    FROM act a JOIN totals t USING (field, value) JOIN per_feature f USING (feature_id), n)
SELECT feature_id, field, value, n_active, n_total, share, lift, chosen, rejected,
       CASE WHEN chosen + rejected > 0
            THEN (chosen - rejected) / (chosen + rejected + mean_cj) END AS preference_score
FROM scored
QUALIFY row_number() OVER (PARTITION BY feature_id, field ORDER BY n_active DESC, value) <= 6
"""

SPLIT_COLUMNS = (
    "INSERT INTO feature_window_splits "
    "(feature_id, split, example_id, active, start, activations, peak)"
)

# explain: per feature, the ``explain_top`` windows of highest activation at the scored
# token (at most half of its windows, so a rarely seen feature keeps some to score with)
# and, when enough remain, ``explain_spread`` more at evenly spaced ranks of the rest;
# heldout: a seeded sample of the remaining windows, disjoint from both. Computed over the windows the
# store holds (all of them after `sarm index`; a pruned set in the shipped default).
SPLITS_SQL = f"""
{SPLIT_COLUMNS}
WITH ranked AS (
    SELECT w.feature_id, w.example_id,
           row_number() OVER (PARTITION BY w.feature_id
                              ORDER BY x.activation DESC, w.example_id) AS rank,
           count(*) OVER (PARTITION BY w.feature_id) AS n
    FROM evidence_windows w
    JOIN latents x ON x.feature_id = w.feature_id AND x.example_id = w.example_id),
sized AS (
    SELECT *, least($top, CAST(ceil(n / 2) AS BIGINT)) AS t FROM ranked),
marked AS (
    SELECT *,
           rank <= t
           OR (n - t > $heldout + $spread AND $spread > 0
               AND (rank - t - 1) % greatest(1, (n - t) // $spread) = 0
               AND (rank - t - 1) // greatest(1, (n - t) // $spread) < $spread)
           AS shown
    FROM sized),
rest AS (
    SELECT feature_id, example_id,
           row_number() OVER (PARTITION BY feature_id
                              ORDER BY hash(example_id, feature_id, $seed)) AS pick
    FROM marked WHERE NOT shown),
chosen AS (
    SELECT feature_id, 'explain' AS split, example_id FROM marked WHERE shown
    UNION ALL
    SELECT feature_id, 'heldout', example_id FROM rest WHERE pick <= $heldout)
SELECT c.feature_id, c.split, c.example_id, true, w.start, w.activations, w.peak
FROM chosen c JOIN evidence_windows w USING (feature_id, example_id)
ORDER BY c.feature_id, c.split, c.example_id
"""

# heldout negatives: as many as the feature's held-out positives, drawn from one seeded
# pool of responses, in a per-feature seeded order, where the feature is not active
# at the scored token.
NEGATIVES_SQL = f"""
{SPLIT_COLUMNS}
WITH pool AS (
    SELECT example_id FROM evidence_responses ORDER BY hash(example_id, $seed) LIMIT $pool),
need AS (
    SELECT feature_id, count(*) AS n FROM feature_window_splits
    WHERE split = 'heldout' GROUP BY 1),
cand AS (
    SELECT n.feature_id, p.example_id, n.n,
           row_number() OVER (PARTITION BY n.feature_id
                              ORDER BY hash(p.example_id, n.feature_id, $seed)) AS pick
    FROM need n CROSS JOIN pool p
    ANTI JOIN latents x ON x.feature_id = n.feature_id AND x.example_id = p.example_id)
SELECT feature_id, 'heldout', example_id, false, NULL, NULL, NULL FROM cand WHERE pick <= n
ORDER BY feature_id, example_id
"""


# matched negatives (split 'matched'): per held-out positive, one response of the same
# stratum where the feature is not active at the scored token, paired by rank within
# the stratum (so no response is used twice for a feature). Level 0's stratum is source,
# subset and length bin (a factor of 2); positives left unpaired try level 1 (source and
# subset), then level 2 (source). Candidates come from a seeded pool of each stratum.
# The negative's window is centred where the positive's peak is, counted from the
# response's start or, for a peak in its second half, from its scored end-of-turn token.
# Split 'contrast' is drawn the same way for the explain positives, after 'matched' and
# never from its responses: held-out negatives stay unseen by whatever reads 'contrast'.
MATCH_LEVELS = (0, 1, 2)
MATCHED_SQL = """
INSERT INTO feature_window_splits (feature_id, split, example_id, active, matched_to, centre)
WITH ex AS (
    SELECT r.example_id, len(r.tokens) AS n, split_part(e.group_id, '/', 1) AS source,
           CASE WHEN $level <= 1 THEN coalesce(e.subset, '(none)') ELSE '' END AS sub,
           CASE WHEN $level = 0 THEN CAST(floor(log2(greatest(len(r.tokens), 1))) AS INTEGER)
                ELSE -1 END AS len_bin
    FROM evidence_responses r JOIN examples e USING (example_id)),
pool AS (
    SELECT * FROM ex
    QUALIFY row_number() OVER (PARTITION BY source, sub, len_bin
                               ORDER BY hash(example_id, $seed)) <= $pool),
paired AS (
    SELECT feature_id, matched_to FROM feature_window_splits WHERE split = $out),
pos AS (
    SELECT s.feature_id, s.example_id AS positive, s.peak, x.n AS n_pos,
           x.source, x.sub, x.len_bin,
           row_number() OVER (PARTITION BY s.feature_id, x.source, x.sub, x.len_bin
                              ORDER BY hash(s.example_id, s.feature_id, $seed)) AS i
    FROM feature_window_splits s JOIN ex x USING (example_id)
    ANTI JOIN paired p ON p.feature_id = s.feature_id AND p.matched_to = s.example_id
    WHERE s.split = $positives AND s.active),
need AS (SELECT DISTINCT feature_id, source, sub, len_bin FROM pos),
used AS (
    SELECT feature_id, example_id FROM feature_window_splits
    WHERE split = 'matched' OR split = 'contrast'),
cand AS (
    SELECT d.feature_id, p.example_id, p.n, p.source, p.sub, p.len_bin,
           row_number() OVER (PARTITION BY d.feature_id, p.source, p.sub, p.len_bin
                              ORDER BY hash(p.example_id, d.feature_id, $seed)) AS i
    FROM need d JOIN pool p USING (source, sub, len_bin)
    ANTI JOIN latents l ON l.feature_id = d.feature_id AND l.example_id = p.example_id
    ANTI JOIN used u ON u.feature_id = d.feature_id AND u.example_id = p.example_id)
SELECT c.feature_id, $out, c.example_id, false, s.positive,
       CASE WHEN 2 * s.peak >= s.n_pos - 1 THEN greatest(0, c.n - s.n_pos + s.peak)
            ELSE least(s.peak, c.n - 1) END
FROM pos s JOIN cand c USING (feature_id, source, sub, len_bin, i)
ORDER BY c.feature_id, c.example_id
"""


#: split of the matched negatives -> split of the positives they are matched to
MATCHED_SPLITS = {"matched": "heldout", "contrast": "explain"}


def draw_matched_negatives(cur, config: EvidenceConfig = EvidenceConfig()) -> int:
    """(Re)draw the source-matched negatives of every feature: ``matched`` for its
    held-out positives (what the scores use), then ``contrast`` for its explain
    positives (what an explainer may compare against; never a ``matched`` response of
    the same feature). Returns the number of ``matched`` rows."""
    cur.execute("DELETE FROM feature_window_splits WHERE split = 'matched' OR split = 'contrast'")
    for out, positives in MATCHED_SPLITS.items():
        for level in MATCH_LEVELS:
            cur.execute(
                MATCHED_SQL,
                {
                    "level": level,
                    "seed": config.seed,
                    "pool": config.matched_pool,
                    "out": out,
                    "positives": positives,
                },
            )
    row = fetch_one(cur, "SELECT count(*) FROM feature_window_splits WHERE split = 'matched'")
    return int(row[0])


def _contrastive(cur, config: EvidenceConfig) -> None:
    """Tokens and bigrams at active positions of explanation windows vs the background.

    The scored end-of-turn token is left out: every window belongs to a feature
    active there, so it would top every list and say nothing.
    """
    bg_tokens, bg_bigrams = _background(cur, config)
    n_bg = sum(bg_tokens.values())
    # only each window's tokens (and the one before, for bigrams), streamed: at the
    # released model's shape the explanation windows are millions of rows
    cur.execute(
        """SELECT s.feature_id, s.start, s.activations, len(r.tokens),
                  r.tokens[greatest(s.start, 1) : s.start + len(s.activations)]
           FROM feature_window_splits s
           JOIN evidence_responses r USING (example_id)
           WHERE s.split = 'explain' ORDER BY s.feature_id"""
    )
    out: dict[str, list] = {k: [] for k in CONTRASTIVE_COLUMNS}
    current, tokens, bigrams = None, Counter(), Counter()
    for fid, start, acts, n_tokens, toks in _streamed(cur, (None, 0, [], 0, [])):
        if fid != current and current is not None:
            _emit(out, current, "token", tokens, bg_tokens, n_bg, config)
            _emit(out, current, "bigram", bigrams, bg_bigrams, n_bg, config)
            tokens, bigrams = Counter(), Counter()
        current = fid
        base = max(start - 1, 0)  # toks[j] is the response's token base + j
        for offset, value in enumerate(acts):
            i = start + offset
            if value != 0 and i != n_tokens - 1:  # the scored token is active by design
                tokens[toks[i - base]] += 1
                if i > 0:
                    bigrams[toks[i - 1 - base] + toks[i - base]] += 1
    insert_arrow(cur, "feature_contrastive", pa.table(out, schema=CONTRASTIVE_SCHEMA))


CONTRASTIVE_SCHEMA = pa.schema(
    [
        ("feature_id", pa.int32()),
        ("kind", pa.string()),
        ("rank", pa.int32()),
        ("text", pa.string()),
        ("active_count", pa.int64()),
        ("active_total", pa.int64()),
        ("background_count", pa.int64()),
        ("background_total", pa.int64()),
        ("ratio", pa.float64()),
    ]
)
CONTRASTIVE_COLUMNS = CONTRASTIVE_SCHEMA.names


def _streamed(cur, last: tuple, size: int = 65_536) -> Iterator[tuple]:
    """The rows of ``cur``'s result in batches, then ``last`` (a sentinel)."""
    while batch := cur.fetchmany(size):
        yield from batch
    yield last


def _background(cur, config: EvidenceConfig) -> tuple[Counter, Counter]:
    """Token and bigram counts at a seeded sample of positions over every response.

    The positions are drawn over the responses' lengths; only the sampled tokens
    (and the ones before them) are read.
    """
    lengths = cur.execute(
        "SELECT example_id, len(tokens) AS n FROM evidence_responses ORDER BY example_id"
    ).fetchnumpy()
    offsets = np.concatenate([[0], np.cumsum(lengths["n"], dtype=np.int64)])
    rng = np.random.default_rng(config.seed)
    n = min(config.background_tokens, int(offsets[-1]))
    picks = np.sort(rng.choice(int(offsets[-1]), size=n, replace=False)) if n else np.zeros(0, int)
    row = np.searchsorted(offsets, picks, side="right") - 1
    sample = pa.table(
        {"example_id": np.asarray(lengths["example_id"])[row], "pos": picks - offsets[row]}
    )
    cur.register("background_sample", sample)
    try:
        rows = cur.execute(
            """SELECT r.tokens[p.pos + 1], CASE WHEN p.pos > 0 THEN r.tokens[p.pos] END
               FROM background_sample p JOIN evidence_responses r USING (example_id)"""
        ).fetchall()
    finally:
        cur.unregister("background_sample")
    tokens = Counter(tok for tok, _ in rows)
    bigrams = Counter(prev + tok for tok, prev in rows if prev is not None)
    return tokens, bigrams


def _emit(out, fid, kind, counts: Counter, background: Counter, n_bg: int, config) -> None:
    """The most over-represented ``kind`` entries of one feature, with their counts."""
    total = sum(counts.values())
    if not total:
        return
    scored = []
    for text, count in counts.items():
        if count < config.min_count or not text.strip():
            continue
        ratio = (count / total) / ((background.get(text, 0) + 0.5) / max(n_bg, 1))
        if ratio > 1:
            scored.append((-count * math.log(ratio), text, count, ratio))
    scored.sort()
    for rank, (_, text, count, ratio) in enumerate(scored[: config.top_contrastive], start=1):
        for key, value in zip(
            CONTRASTIVE_COLUMNS,
            (fid, kind, rank, text, count, total, background.get(text, 0), n_bg, ratio),
            strict=True,
        ):
            out[key].append(value)
