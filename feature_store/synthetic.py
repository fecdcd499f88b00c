"""Synthetic stores for benchmarks and tests: real DuckDB, generated numbers.

Feature ids follow a power law (a few features fire often, most rarely), as
SAE latents do; activations are positive and roughly log-normal.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of a synthetic store: ``n_pairs`` chosen/rejected pairs, ``nnz`` latents each."""

    n_pairs: int = 1000
    d_sae: int = 512
    nnz: int = 16
    seed: int = 0
    chunk_size: int = 4096

    def __post_init__(self) -> None:
        check_int(self.n_pairs, "n_pairs", low=1)
        check_int(self.d_sae, "d_sae", low=2)
        check_int(self.nnz, "nnz", low=1, high=self.d_sae + 1)
        check_int(self.chunk_size, "chunk_size", low=1)


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


def synthetic_latents(
    spec: SyntheticSpec, n_examples: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``[n_examples, nnz]`` distinct feature ids (power law) and positive activations."""
    p = 1.0 / np.arange(1, spec.d_sae + 1) ** 0.8
    cdf = np.cumsum(p / p.sum())
    perm = rng.permutation(spec.d_sae).astype(np.int32)
    ids = np.empty((n_examples, spec.nnz), dtype=np.int32)
    for row in range(n_examples):
        draws = np.minimum(np.searchsorted(cdf, rng.random(spec.nnz * 2)), spec.d_sae - 1)
        _, first = np.unique(draws, return_index=True)
        picked = draws[np.sort(first)][: spec.nnz]
        if len(picked) < spec.nnz:
            picked = rng.choice(spec.d_sae, size=spec.nnz, replace=False, p=p / p.sum())
        ids[row] = perm[picked]
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
