"""DuckDB feature store for SARM: ingest, feature statistics, labels, head versions.

>>> from feature_store import FeatureStore
>>> store = FeatureStore.open("artifacts/demo.duckdb", read_only=True)
>>> store.features(order_by="abs_contribution", limit=20)
"""

from feature_store.binding import Binding
from feature_store.chunks import ChunkData, write_chunk
from feature_store.connection import Connection
from feature_store.errors import (
    HeadVersionError,
    NotCachedError,
    PartError,
    StoreBusyError,
    StoreError,
    StoreIncompleteError,
    StoreMismatchError,
    StoreNotFoundError,
    StoreReadOnlyError,
    StoreVersionError,
)
from feature_store.evidence_parts import write_decoder_part
from feature_store.heads import HeadVersion
from feature_store.ingest import IngestReport, StoreStatus, ingest
from feature_store.labels import LABEL_SOURCES, LabelVersion
from feature_store.plan import Chunk, Shard
from feature_store.queries import FEATURE_ORDERS, StoredExample
from feature_store.schema import latest_version
from feature_store.shards import ingest_shard, merge_parts, read_binding
from feature_store.source import CachedLatents, LatentSource, TokenSource
from feature_store.stats import StatsConfig
from feature_store.store import FeatureStore
from feature_store.tokens import TokenHighlights

__all__ = [
    "FEATURE_ORDERS",
    "LABEL_SOURCES",
    "Binding",
    "CachedLatents",
    "Chunk",
    "ChunkData",
    "Connection",
    "FeatureStore",
    "HeadVersion",
    "HeadVersionError",
    "IngestReport",
    "LabelVersion",
    "LatentSource",
    "NotCachedError",
    "PartError",
    "Shard",
    "StatsConfig",
    "StoreBusyError",
    "StoreError",
    "StoreIncompleteError",
    "StoreMismatchError",
    "StoreNotFoundError",
    "StoreReadOnlyError",
    "StoreStatus",
    "StoreVersionError",
    "StoredExample",
    "TokenHighlights",
    "TokenSource",
    "ingest",
    "ingest_shard",
    "latest_version",
    "merge_parts",
    "read_binding",
    "write_chunk",
    "write_decoder_part",
]
