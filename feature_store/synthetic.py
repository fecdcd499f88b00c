"""Synthetic stores for benchmarks and tests: real DuckDB, generated numbers.

Feature ids follow a power law (a few features fire often, most rarely), as
SAE latents do; activations are positive and roughly log-normal.
``shape="default"`` follows the frequency profile measured on the default
SARM's store instead (:data:`DEFAULT_PROFILE`), with its hot features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from feature_store.binding import Binding, bind
from feature_store.chunks import ChunkData, write_chunk
from feature_store.ingest import finish
from feature_store.plan import data_fingerprint, make_chunks
from feature_store.store import FeatureStore
from feature_store.validate import check_int
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.types import PreferenceGroup, responses_of

logger = logging.getLogger(__name__)
_WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "safe",
    "unsafe",
    "helpful",
    "refuse",
    "explain",
    "code",
    "math",
    "poem",
    "list",
    "table",
]


#: The default SARM store's feature frequencies (9,028 responses, 4,096 features, k = 64;
#: measured with the query in docs/scale.md): ``(rank / d_sae, frequency / (k / d_sae))``,
#: i.e. a feature's frequency relative to the mean, by its rank as a fraction of the SAE.
#: A third of the features never fire.
DEFAULT_PROFILE = (
    (0.000244, 23.09),
    (0.000488, 20.18),
    (0.000977, 19.08),
    (0.001953, 16.0),
    (0.003906, 13.99),
    (0.007812, 10.44),
    (0.015625, 8.03),
    (0.03125, 6.12),
    (0.0625, 3.91),
    (0.125, 2.39),
    (0.1875, 1.69),
    (0.25, 1.18),
    (0.375, 0.53),
    (0.5, 0.128),
    (0.585938, 0.0284),
    (0.661865, 0.0071),
    (0.662109, 0.0),
    (1.0, 0.0),
)
#: its hot features keep their absolute frequencies at any SAE size (the top 8 there)
DEFAULT_HOT = (0.361, 0.315, 0.311, 0.298, 0.260, 0.258, 0.254, 0.250)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of a synthetic store: ``n_pairs`` chosen/rejected pairs, ``nnz`` latents each.

    ``shape``: ``"powerlaw"`` (frequency ~ rank^-0.8) or ``"default"`` (the
    default store's measured profile, :data:`DEFAULT_PROFILE`, and hot features).
    """

    n_pairs: int = 1000
    d_sae: int = 512
    nnz: int = 16
    seed: int = 0
    chunk_size: int = 4096
    shape: Literal["powerlaw", "default"] = "powerlaw"

    def __post_init__(self) -> None:
        check_int(self.n_pairs, "n_pairs", low=1)
        check_int(self.d_sae, "d_sae", low=2)
        check_int(self.nnz, "nnz", low=1, high=self.d_sae + 1)
        check_int(self.chunk_size, "chunk_size", low=1)
        if self.shape not in ("powerlaw", "default"):
            raise ValueError(f"shape must be 'powerlaw' or 'default', got {self.shape!r}")
        if self.shape == "default" and self.nnz <= len(DEFAULT_HOT):
            raise ValueError(f"shape='default' needs nnz > {len(DEFAULT_HOT)}, got {self.nnz}")


def synthetic_groups(spec: SyntheticSpec) -> list:
    """``n_pairs`` pair groups over three subsets, with short generated texts."""
    rng = np.random.default_rng(spec.seed)
    words = rng.choice(_WORDS, size=(spec.n_pairs, 3, 6))
    subsets = ("chat", "safety", "code")
    return [
        PreferenceGroup(
            group_id=f"g{i}",
            prompt=({"role": "user", "content": " ".join(words[i, 0])},),
            chosen=(" ".join(words[i, 1]) + f" {i}",),
            rejected=(" ".join(words[i, 2]) + f" {i}",),
            subset=subsets[i % 3],
        )
        for i in range(spec.n_pairs)
    ]


def rank_weights(spec: SyntheticSpec) -> np.ndarray:
    """Relative draw weight of the feature of each rank (most frequent first)."""
    ranks = np.arange(1, spec.d_sae + 1)
    if spec.shape == "powerlaw":
        return 1.0 / ranks**0.8
    x, y = (np.array(c) for c in zip(*DEFAULT_PROFILE, strict=True))
    return np.interp(ranks / spec.d_sae, x, y)


def _distinct_draws(p: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct ranks drawn with weights ``p`` (in draw order)."""
    cdf = np.cumsum(p / p.sum())
    draws = np.minimum(np.searchsorted(cdf, rng.random(n * 2)), len(p) - 1)
    _, first = np.unique(draws, return_index=True)
    picked = draws[np.sort(first)][:n]
    if len(picked) < n:
        picked = rng.choice(len(p), size=n, replace=False, p=p / p.sum())
    return picked


def synthetic_latents(
    spec: SyntheticSpec, n_examples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``[n_examples, nnz]`` distinct feature ids (see ``spec.shape``) and positive activations.

    With ``shape="default"`` the first ``len(DEFAULT_HOT)`` ranks fire with the
    default store's absolute frequencies and the rest of each row is drawn from
    the profile.
    """
    p = rank_weights(spec)
    n_hot = len(DEFAULT_HOT) if spec.shape == "default" else 0
    p[:n_hot] = 0.0
    perm = rng.permutation(spec.d_sae).astype(np.int32)
    hot = rng.random((n_examples, n_hot)) < np.array(DEFAULT_HOT[:n_hot])
    ids = np.empty((n_examples, spec.nnz), dtype=np.int32)
    for row in range(n_examples):
        on = np.flatnonzero(hot[row])
        ranks = np.concatenate([on, _distinct_draws(p, spec.nnz - len(on), rng)])
        ids[row] = perm[ranks]
    values = rng.lognormal(mean=0.0, sigma=0.6, size=(n_examples, spec.nnz)).astype(np.float32)
    return ids, values


def store_from_arrays(
    path: str | Path,
    groups: Sequence,
    indices: Sequence[np.ndarray],
    values: Sequence[np.ndarray],
    weights: np.ndarray,
    bias: float = 0.0,
    *,
    chunk_size: int = 4096,
    top_n: int = 20,
    sae: str = "synthetic",
    progress: bool = False,
) -> FeatureStore:
    """A complete store from given latents (one row of ``indices``/``values`` per response).

    Rewards are the head's rewards of the latents; token counts are a
    character-based stand-in. Returns the store open.
    """
    plan = responses_of(groups)
    if not len(indices) == len(values) == len(plan):
        raise ValueError(f"give latents for all {len(plan)} responses, got {len(indices)}")
    head = Head(weights, bias)
    latents = SparseLatents.from_rows(list(indices), list(values), head.size)
    rewards = head.rewards(latents)
    fingerprint = {"backbone": "synthetic", "layer": "0", "sae": sae, "head": "synthetic"}
    binding = Binding(
        fingerprint, head.size, head, data_fingerprint(plan), len(plan), chunk_size, "synthetic"
    )
    store = FeatureStore.open(path)
    try:
        bind(store, binding)
        tokens = np.array([len(e.prompt) + len(e.response) for e in plan]) // 4
        chunks = make_chunks(len(plan), chunk_size)
        for chunk in tqdm(chunks, desc="synthetic", disable=not progress):
            rows = np.arange(chunk.start, chunk.stop)
            data = ChunkData.from_results(
                plan[chunk.start : chunk.stop],
                latents.take(rows),
                rewards[rows],
                tokens[rows],
                np.zeros(chunk.size, bool),
            )
            write_chunk(store, chunk, data)
        finish(store, binding, top_n)
    except BaseException:
        store.close()
        raise
    return store


def build_synthetic_store(
    path: str | Path, spec: SyntheticSpec, *, progress: bool = False
) -> FeatureStore:
    """A complete synthetic store (examples, latents, head, statistics) at ``path``, open."""
    groups = synthetic_groups(spec)
    rng = np.random.default_rng(spec.seed + 1)
    ids, values = synthetic_latents(spec, 2 * spec.n_pairs, rng)
    weights = rng.normal(0, 0.05, spec.d_sae).astype(np.float32)
    return store_from_arrays(
        path,
        groups,
        list(ids),
        list(values),
        weights,
        chunk_size=spec.chunk_size,
        sae=f"synthetic-{spec.seed}",
        progress=progress,
    )


# ------------------------------------------------------------------ evidence at scale

#: SQL that fills the evidence tables of a synthetic store from its latents, in the
#: shapes `sarm index` writes: every response's tokens (``$length`` of them, from a
#: ``$vocab``-word vocabulary), and per (response, feature active at the scored
#: token) a window of ``2 * $window + 1`` activations, most of them 0 as real SAE
#: features fire on few tokens; per chunk its token and feature counts.
SYNTHETIC_EVIDENCE_SQL = (
    """INSERT INTO evidence_responses
       SELECT example_id,
              list_transform(range($length), lambda i: 'w' || (hash(example_id, i) % $vocab)),
              list_transform(range($length), lambda i: (hash(example_id, i) % $vocab)::INTEGER),
              $length - 1
       FROM examples""",
    """INSERT INTO evidence_windows
       SELECT example_id, feature_id, peak, activation, peak - $window,
              list_transform(range(2 * $window + 1), lambda i:
                  CASE WHEN i = $window THEN activation
                       WHEN hash(example_id, feature_id, i) % 5 = 0
                       THEN (activation * (hash(feature_id, i) % 100) / 100.0)::FLOAT
                       ELSE 0::FLOAT END)
       FROM (SELECT *, $length - 1 - $window
                       - (hash(example_id, feature_id) % ($length - 2 * $window))::INTEGER AS peak
             FROM latents)""",
    """INSERT INTO evidence_chunks
       SELECT chunk_index, n_examples * $length, n_examples, $window FROM ingest_chunks""",
    """INSERT INTO evidence_counts
       SELECT c.chunk_index, x.feature_id, 4 * count(*), count(*),
              list_transform(range($bins), lambda b: CASE WHEN b = 13 THEN 4 * count(*) ELSE 0 END)
       FROM latents x JOIN ingest_chunks c
         ON x.example_id >= c.first_example AND x.example_id < c.first_example + c.n_examples
       GROUP BY c.chunk_index, x.feature_id""",
)


def add_synthetic_evidence(
    store: FeatureStore, *, length: int = 200, window: int = 16, vocab: int = 5000
) -> None:
    """Fill the evidence tables of a synthetic store (one transaction; refresh the statistics
    afterwards to build the aggregates)."""
    from sarm.explain.evidence import N_BINS

    check_int(window, "window", low=0)
    check_int(length, "length", low=2 * window + 2)
    params = {"length": length, "window": window, "vocab": vocab, "bins": N_BINS}
    with store.write("writing synthetic evidence") as cur:
        for sql in SYNTHETIC_EVIDENCE_SQL:
            used = {k: v for k, v in params.items() if f"${k}" in sql}
            cur.execute(sql, used)
