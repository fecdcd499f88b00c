"""Feature statistics, histograms and example selections, computed in DuckDB.

Definitions (N = number of examples; sums run over the stored non-zeros):
- ``frequency = n_active / N``; ``mean_activation`` and ``max_activation`` over
  the examples where the feature is active;
- ``mean_contribution = weight * sum(activation) / N`` (zeros included), so
  ``sum_i mean_contribution_i + bias`` is the mean stored reward;
- ``chosen_mean`` / ``rejected_mean``: mean activation over chosen / rejected
  responses (zeros included); ``salience = (a_c - a_r) / (a_c + a_r + 2 m)``
  with ``m = sum(activation) / N`` (as in SAFER), NULL when undefined;
- histogram: ``n_bins`` equal-width bins over [min, max] of the active values;
- ``feature_examples``: band 0 = top-N by activation (ties by example_id);
  the rest of the active examples split into ``bands`` equal-count quantile
  bands, ``per_band`` examples picked at evenly spaced positions in each;
- ``latents_by_feature``: the latents sorted by feature id (for queries over
  a few features' examples; see sql/007_latents_by_feature.sql).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone

from feature_store.connection import Connection
from feature_store.errors import StoreError
from feature_store.evidence import refresh_evidence
from feature_store.meta import put_meta
from feature_store.validate import check_int

logger = logging.getLogger(__name__)

FEATURE_STATS_SQL = """
INSERT INTO feature_stats
WITH n AS (
    SELECT count(*)::DOUBLE AS n_all,
           count(*) FILTER (WHERE role = 'chosen') AS n_c,
           count(*) FILTER (WHERE role = 'rejected') AS n_r
    FROM examples),
agg AS (
    SELECT x.feature_id, count(*) AS n_active, sum(x.activation::DOUBLE) AS total,
           max(x.activation)::DOUBLE AS max_a, min(x.activation)::DOUBLE AS min_a,
           coalesce(sum(x.activation::DOUBLE) FILTER (WHERE e.role = 'chosen'), 0) AS total_c,
           coalesce(sum(x.activation::DOUBLE) FILTER (WHERE e.role = 'rejected'), 0) AS total_r
    FROM latents x JOIN examples e USING (example_id)
    GROUP BY x.feature_id),
base AS (
    SELECT f.feature_id, coalesce(a.n_active, 0) AS n_active, coalesce(a.total, 0) AS total,
           a.max_a, a.min_a, coalesce(a.total_c, 0) AS total_c, coalesce(a.total_r, 0) AS total_r,
           coalesce(w.weight, 0)::DOUBLE AS weight, n.n_all, n.n_c, n.n_r
    FROM range($d_sae) f(feature_id) CROSS JOIN n
    LEFT JOIN agg a ON a.feature_id = f.feature_id
    LEFT JOIN head_weights w ON w.feature_id = f.feature_id),
means AS (
    SELECT *,
           CASE WHEN n_all > 0 THEN total / n_all END AS mean_all,
           CASE WHEN n_c > 0 THEN total_c / n_c END AS chosen_mean,
           CASE WHEN n_r > 0 THEN total_r / n_r END AS rejected_mean
    FROM base)
SELECT feature_id, n_active,
       CASE WHEN n_all > 0 THEN n_active / n_all ELSE 0 END AS frequency,
       CASE WHEN n_active > 0 THEN total / n_active END AS mean_activation,
       max_a, min_a, weight,
       coalesce(contribution(mean_all, weight), 0) AS mean_contribution,
       chosen_mean, rejected_mean,
       CASE WHEN chosen_mean + rejected_mean + 2 * mean_all <> 0
            THEN (chosen_mean - rejected_mean) / (chosen_mean + rejected_mean + 2 * mean_all)
       END AS salience
FROM means ORDER BY feature_id
"""

HISTOGRAM_SQL = """
INSERT INTO feature_histograms
SELECT x.feature_id,
       CASE WHEN s.max_activation > s.min_activation
            THEN least(CAST(floor((x.activation::DOUBLE - s.min_activation)
                                  / (s.max_activation - s.min_activation) * $bins) AS INTEGER),
                       $bins - 1)
            ELSE 0 END AS bin,
       count(*) AS count
FROM latents x JOIN feature_stats s USING (feature_id)
GROUP BY ALL ORDER BY 1, 2
"""

EXAMPLES_SQL = """
INSERT INTO feature_examples
WITH ranked AS (
    SELECT feature_id, example_id, activation,
           row_number() OVER (PARTITION BY feature_id ORDER BY activation DESC, example_id) AS rank,
           count(*) OVER (PARTITION BY feature_id) AS n
    FROM latents),
rest AS (
    SELECT *, 1 + CAST(floor((rank - $top_n - 1) * $bands / (n - $top_n)) AS INTEGER) AS band
    FROM ranked WHERE rank > $top_n),
positioned AS (
    SELECT *, row_number() OVER (PARTITION BY feature_id, band ORDER BY rank) - 1 AS pos,
           count(*) OVER (PARTITION BY feature_id, band) AS size
    FROM rest),
picks AS (
    SELECT DISTINCT b.feature_id, b.band,
           CAST(floor((t.j + 0.5) * b.size / $per_band) AS BIGINT) AS pos
    FROM (SELECT DISTINCT feature_id, band, size FROM positioned) b, range($per_band) t(j))
SELECT feature_id, 0 AS band, rank, example_id, activation FROM ranked WHERE rank <= $top_n
UNION ALL
SELECT p.feature_id, p.band, p.rank, p.example_id, p.activation
FROM positioned p JOIN picks k ON p.feature_id = k.feature_id AND p.band = k.band AND p.pos = k.pos
ORDER BY feature_id, band, rank
"""


BY_FEATURE_SQL = """
DELETE FROM latents_by_feature;
INSERT INTO latents_by_feature
SELECT feature_id, example_id, activation FROM latents ORDER BY feature_id, example_id;
"""


@dataclass(frozen=True)
class StatsConfig:
    """How many examples to keep per feature and how to bin activations."""

    top_n: int = 20
    bands: int = 4
    per_band: int = 3
    hist_bins: int = 20

    def __post_init__(self) -> None:
        check_int(self.top_n, "top_n", low=1, high=10_001)
        check_int(self.bands, "bands", low=1, high=101)
        check_int(self.per_band, "per_band", low=0, high=1_001)
        check_int(self.hist_bins, "hist_bins", low=1, high=1_001)

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> StatsConfig:
        """The settings of the store's last refresh (defaults for those never recorded)."""
        given = {
            f.name: int(meta[f"stats_{f.name}"]) for f in fields(cls) if f"stats_{f.name}" in meta
        }
        return cls(**given)


def refresh_stats(
    conn: Connection,
    top_n: int = 20,
    bands: int = 4,
    per_band: int = 3,
    hist_bins: int = 20,
    *,
    mark_complete: bool = False,
) -> StatsConfig:
    """Recompute every feature table in one transaction (readers see old or new, never half).

    ``mark_complete=True`` (the end of an ingest) sets ``complete`` in the same
    transaction, so a store is never marked complete without its statistics.
    """
    config = StatsConfig(top_n, bands, per_band, hist_bins)
    d_sae = conn.d_sae
    if d_sae is None:
        raise StoreError(f"feature store {conn.path} has no model bound yet; ingest data first")
    with conn.write("refreshing feature statistics") as cur:
        for table in ("feature_stats", "feature_histograms", "feature_examples"):
            cur.execute(f"DELETE FROM {table}")
        cur.execute(BY_FEATURE_SQL)
        cur.execute(FEATURE_STATS_SQL, {"d_sae": d_sae})
        cur.execute(HISTOGRAM_SQL, {"bins": config.hist_bins})
        cur.execute(
            EXAMPLES_SQL,
            {"top_n": config.top_n, "bands": config.bands, "per_band": config.per_band},
        )
        refresh_evidence(cur, d_sae)
        now = datetime.now(timezone.utc).replace(tzinfo=None).isoformat()
        put_meta(cur, {f"stats_{k}": v for k, v in {**asdict(config), "refreshed_at": now}.items()})
        if mark_complete:
            put_meta(cur, {"complete": "true"})
    logger.info("feature statistics refreshed for %d features", d_sae)
    return config
