"""The feature store's own exceptions.

Every ``duckdb.Error`` is caught at the store's boundary and re-raised as one of
these, with a message naming the store file and the operation that failed.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the feature store raises."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """The store file does not exist (and was opened read-only)."""


class StoreVersionError(StoreError):
    """The store's schema version is not the one this library writes.

    ``older`` is True when the store is older than the library (a read-write
    open migrates it), False when it is newer (upgrade the library).
    """

    def __init__(self, message: str, *, older: bool = False) -> None:
        super().__init__(message)
        self.older = older


class StoreMismatchError(StoreError, ValueError):
    """The store was built with a different model, SAE or dataset than the one given."""


class StoreBusyError(StoreError):
    """Another process holds the store file open for writing."""


class StoreReadOnlyError(StoreError):
    """A write was attempted on a store opened with ``read_only=True``."""


class NotCachedError(StoreError, LookupError):
    """Per-token activations are not cached and no model was given to compute them."""


class HeadVersionError(StoreError, ValueError):
    """A head version name is unknown, already taken, or its weights are malformed."""


class StoreIncompleteError(StoreError):
    """Every chunk is stored but the statistics are missing (the end of an ingest failed)."""


class PartError(StoreError):
    """A shard part disagrees with its manifest or with itself; the merge refuses it."""
