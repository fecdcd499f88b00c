-- The annotations database (SQLite, WAL mode), beside the DuckDB store file:
-- what people and tools write while others read. Not a DuckDB migration; the
-- version is PRAGMA user_version (feature_store.annotations.SCHEMA_VERSION).

-- Labels are append-only: every version is kept, the newest per feature is shown.
CREATE TABLE IF NOT EXISTS labels (
    label_id INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_id INTEGER NOT NULL,
    label TEXT NOT NULL,
    description TEXT NOT NULL,
    author TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS labels_by_feature ON labels (feature_id, label_id);

-- Saved head versions (immutable; the ingest head is read from the DuckDB store).
-- weights: float32 little-endian, d_sae values.
CREATE TABLE IF NOT EXISTS head_versions (
    name TEXT PRIMARY KEY,
    parent TEXT,
    note TEXT NOT NULL,
    author TEXT NOT NULL,
    metrics TEXT NOT NULL,
    bias REAL NOT NULL,
    weights BLOB NOT NULL,
    created_at TEXT NOT NULL
);

-- One row per one-time import (labels and head versions of a DuckDB store of
-- schema <= 4, which kept them in its own tables).
CREATE TABLE IF NOT EXISTS imports (
    source TEXT PRIMARY KEY,
    n_labels INTEGER NOT NULL,
    n_heads INTEGER NOT NULL,
    imported_at TEXT NOT NULL
);

-- Version 2: feature explanations (issue 12), append-only like labels. source is
-- 'stats', 'llm:<model>' or 'human'; score is the balanced detection accuracy on
-- held-out windows; evidence_hash names the evidence it was written from; details
-- is JSON (the detection rule, counts).
CREATE TABLE IF NOT EXISTS explanations (
    explanation_id INTEGER PRIMARY KEY AUTOINCREMENT,
    feature_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    version TEXT NOT NULL,
    score REAL,
    monosemanticity INTEGER,
    evidence_hash TEXT NOT NULL,
    details TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS explanations_by_feature ON explanations (feature_id, explanation_id);
