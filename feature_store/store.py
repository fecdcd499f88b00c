"""The :class:`FeatureStore`: one DuckDB file holding an indexed dataset.

A thin facade: the lifecycle, transactions and metadata come from
:class:`~feature_store.connection.Connection`; every other method hands the
connection to one function of :mod:`~feature_store.queries`,
:mod:`~feature_store.stats`, :mod:`~feature_store.labels`,
:mod:`~feature_store.heads` or :mod:`~feature_store.tokens`. Those modules take
a connection, never the store, so nothing calls back into this class.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from typing_extensions import Self

from feature_store import evidence_reads, explanations, heads, labels, queries, stats, tokens
from feature_store.annotations import annotations_path
from feature_store.connection import Connection
from feature_store.errors import StoreError, StoreVersionError
from feature_store.heads import HeadVersion
from feature_store.ingest import StoreStatus, finish_unfinished, store_status
from feature_store.queries import StoredExample
from feature_store.source import TokenSource
from feature_store.tokens import TokenHighlights
from sarm.latents import SparseLatents

logger = logging.getLogger(__name__)
PARTIAL_SUFFIX = ".partial"


class FeatureStore(Connection):
    """An indexed dataset in DuckDB. Create with :meth:`FeatureStore.open`."""

    @classmethod
    def open(
        cls, path: str | Path, *, read_only: bool = False, annotations: str | Path | None = None
    ) -> Self:
        """Open the store at ``path`` (see :meth:`Connection.open`), checking it is finished.

        A store whose chunks are all stored but whose statistics are missing
        (its ingest failed at the very end) is finished now when opened
        read-write, and refused with a StoreIncompleteError saying how to
        finish it when opened read-only.
        """
        store = super().open(path, read_only=read_only, annotations=annotations)
        try:
            finish_unfinished(store)
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_for_reading(cls, path: str | Path) -> Self:
        """Open ``path`` read-only, first migrating a store of an older schema.

        Readers (the dashboard, ``sarm score --labels``, ``sarm shift``) never
        hold the file for writing; a store written by an older version is
        migrated by one brief read-write open (which needs no other process to
        be writing it), then opened read-only.
        """
        try:
            return cls.open(path, read_only=True)
        except StoreVersionError as exc:
            if not exc.older:
                raise
            logger.info("migrating feature store %s to the current schema", path)
            cls.open(path).close()
            return cls.open(path, read_only=True)

    def status(self) -> StoreStatus:
        """Empty, indexing, unfinished or complete, with a line saying what to do."""
        return store_status(self)

    def summary(self) -> dict[str, Any]:
        """:meth:`Connection.summary` plus the store's ``status`` and its ``status_message``."""
        status = self.status()
        return {
            **super().summary(),
            "complete": status.complete,
            "status": status.state,
            "status_message": status.message,
        }

    @classmethod
    @contextmanager
    def building(cls, path: str | Path) -> Iterator[FeatureStore]:
        """A store in which to (re)build ``path``, renamed onto ``path`` when the block succeeds.

        The work happens in ``path.partial`` (a copy of ``path`` when it exists,
        so a built store is resumed or extended), which processes reading
        ``path`` never see: they keep the file they opened until they reopen it.
        An interrupted build leaves ``path.partial``, and the next one resumes
        from it. Labels and head versions stay in ``path``'s annotations database.
        """
        final = Path(path).expanduser()
        if final.is_dir():
            raise StoreError(f"feature store path {final} is a directory; give a .duckdb file path")
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if final.exists() and not partial.exists():
            _copy_store(final, partial)
        with cls.open(partial, annotations=annotations_path(final)) as store:
            yield store
        _replace_store(partial, final)

    # ------------------------------------------------------------------ explanations
    def explanations(self) -> pd.DataFrame:
        """Latest explanation per feature and source; see :mod:`feature_store.explanations`."""
        return explanations.explanations(self)

    def explanation_history(self, feature_id: int) -> pd.DataFrame:
        """Every explanation version of ``feature_id``, newest first."""
        return explanations.explanation_history(self, feature_id)

    def titles_for(self, feature_ids: Sequence[int]) -> dict[int, str]:
        """Label, else best explanation and its score, per feature (for names in charts)."""
        return explanations.titles_for(self, feature_ids)

    def display_explanations(self) -> pd.DataFrame:
        """One shown explanation per feature (a human label always wins)."""
        return explanations.display_explanations(self)

    def feature_evidence(self, feature_id: int) -> dict[str, Any]:
        """Stored evidence of ``feature_id`` for its page; see :mod:`feature_store.evidence_reads`."""
        return evidence_reads.feature_evidence(self, feature_id)

    # ------------------------------------------------------------------ queries
    def features(self, **kwargs: Any) -> pd.DataFrame:
        """One row per feature; see :func:`feature_store.queries.features`."""
        return queries.features(self, **kwargs)

    def count_features(self, **kwargs: Any) -> int:
        """How many features match the filters :meth:`features` takes."""
        return queries.count_features(self, **kwargs)

    def feature(self, feature_id: int) -> dict[str, Any]:
        """One feature's statistics and latest label."""
        return queries.feature(self, feature_id)

    def top_examples(self, feature_id: int, limit: int = 20) -> pd.DataFrame:
        """The examples where ``feature_id`` fires most, strongest first."""
        return queries.top_examples(self, feature_id, limit)

    def quantile_examples(self, feature_id: int) -> pd.DataFrame:
        """A few examples from each lower activation quantile of ``feature_id``."""
        return queries.quantile_examples(self, feature_id)

    def feature_histogram(self, feature_id: int) -> pd.DataFrame:
        """Activation histogram of ``feature_id`` over examples where it is active."""
        return queries.feature_histogram(self, feature_id)

    def example(self, example_id: int) -> StoredExample:
        """One example with its texts, reward and active features."""
        return queries.example(self, example_id)

    def examples_frame(self, *, with_text: bool = False) -> pd.DataFrame:
        """Every example's ids, role, subset and reward (texts on request)."""
        return queries.examples_frame(self, with_text=with_text)

    def latent_matrix(self) -> SparseLatents:
        """All pooled latents, rows ordered by example_id (``example_ids`` names them)."""
        return queries.latent_matrix(self)

    def head_weights(self) -> tuple[np.ndarray, float]:
        """The head used at ingest: dense weights ``[d_sae]`` and bias."""
        return queries.head_weights(self)

    def search_examples(self, text: str, limit: int = 1000) -> np.ndarray:
        """Ids of examples whose prompt or response contains ``text`` (case-insensitive)."""
        return queries.search_examples(self, text, limit)

    def example_texts(self, example_ids: Sequence[int]) -> pd.DataFrame:
        """``example_id, prompt, response`` of up to 5,000 examples."""
        return queries.example_texts(self, list(example_ids))

    def revision(self) -> tuple[int, int]:
        """``(newest label id, number of head versions)``, a cache key for readers."""
        return queries.revision(self)

    # ------------------------------------------------------------------- stats
    def refresh_stats(self, top_n: int = 20, **kwargs: Any) -> None:
        """Recompute feature statistics and example selections in SQL."""
        stats.refresh_stats(self, top_n=top_n, **kwargs)

    # ------------------------------------------------------------------ labels
    def set_label(
        self,
        feature_id: int,
        label: str,
        description: str = "",
        author: str = "",
        source: str = "human",
    ) -> int:
        """Add a new label version for ``feature_id``; returns its label_id."""
        return labels.set_label(self, feature_id, label, description, author, source)

    def label_history(self, feature_id: int) -> pd.DataFrame:
        """Every label version of ``feature_id``, newest first."""
        return labels.label_history(self, feature_id)

    def search_labels(self, text: str, limit: int = 100) -> pd.DataFrame:
        """Features whose latest label or description contains ``text``."""
        return labels.search_labels(self, text, limit)

    def labels_for(self, feature_ids: Sequence[int]) -> dict[int, str]:
        """``{feature_id: latest label}`` for the labelled ones among ``feature_ids``."""
        return labels.labels_for(self, feature_ids)

    def labels_frame(self, *, all_versions: bool = False) -> pd.DataFrame:
        """The latest label of every labelled feature (or every version)."""
        return labels.labels_frame(self, all_versions=all_versions)

    # ------------------------------------------------------------------- heads
    def save_head(
        self,
        name: str,
        weights: Sequence[float] | np.ndarray,
        bias: float = 0.0,
        *,
        parent: str | None = None,
        note: str = "",
        author: str = "",
        metrics: Mapping[str, float] | None = None,
    ) -> HeadVersion:
        """Save a named, immutable head version."""
        return heads.save_head(
            self, name, weights, bias, parent=parent, note=note, author=author, metrics=metrics
        )

    def head_versions(self) -> pd.DataFrame:
        """Every saved head version (without weights), newest first."""
        return heads.head_versions(self)

    def load_head(self, name: str) -> HeadVersion:
        """One saved head version with its weights."""
        return heads.load_head(self, name)

    def diff_heads(self, a: str, b: str) -> pd.DataFrame:
        """Features whose weight differs between head versions ``a`` and ``b``."""
        return heads.diff_heads(self, a, b)

    # ------------------------------------------------------------------ tokens
    def token_activations(
        self, example_id: int, feature_ids: Sequence[int], sarm: TokenSource | None = None
    ) -> TokenHighlights:
        """Per-token activations of ``feature_ids`` on an example (cached)."""
        return tokens.token_activations(self, example_id, feature_ids, sarm)

    def warm_token_cache(
        self,
        sarm: TokenSource,
        feature_ids: Sequence[int],
        per_feature: int = 5,
        *,
        progress: bool = True,
    ) -> int:
        """Precompute highlights for the top ``per_feature`` examples of ``feature_ids``."""
        return tokens.warm_token_cache(self, sarm, feature_ids, per_feature, progress=progress)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _copy_store(source: Path, target: Path) -> None:
    """Copy a store file and its write-ahead log, the file last (its presence means complete)."""
    logger.info("copying %s to %s to build into", source, target)
    tmp = target.with_name(target.name + ".copying")
    if _wal(source).exists():
        shutil.copyfile(_wal(source), _wal(target))
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _replace_store(partial: Path, final: Path) -> None:
    """Rename a closed, finished build onto ``final`` (atomically on one file system)."""
    if _wal(partial).exists():  # closing folds the log in; never rename half a store
        raise StoreError(
            f"{partial} still has a write-ahead log after closing; not renamed onto {final}"
        )
    _wal(final).unlink(missing_ok=True)  # belongs to the old file; would replay onto the new
    os.replace(partial, final)
    logger.info("feature store %s replaced by the new build", final)
