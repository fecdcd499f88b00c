-- Version 1: store metadata, examples, pooled sparse latents, ingest progress, labels.

CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per scored response. example_id is the position of the response in
-- the dataset (group order x response order), so resumed and sharded runs agree.
CREATE TABLE examples (
    example_id BIGINT PRIMARY KEY,
    group_index BIGINT NOT NULL,
    group_id VARCHAR NOT NULL,
    role VARCHAR NOT NULL CHECK (role IN ('chosen', 'rejected', 'single')),
    response_index INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    subset VARCHAR,
    target DOUBLE,
    prompt VARCHAR NOT NULL,
    response VARCHAR NOT NULL,
    prompt_messages VARCHAR NOT NULL,
    reward DOUBLE NOT NULL,
    n_tokens INTEGER NOT NULL,
    truncated BOOLEAN NOT NULL
);

-- Non-zero entries of the pooled latents z_T, one row per (example, feature).
CREATE TABLE latents (
    example_id BIGINT NOT NULL,
    feature_id INTEGER NOT NULL,
    activation FLOAT NOT NULL
);

-- The head used at ingest (dense, one row per latent).
CREATE TABLE head_weights (
    feature_id INTEGER PRIMARY KEY,
    weight FLOAT NOT NULL
);

-- Progress marker: a chunk's examples, latents and this row commit together.
CREATE TABLE ingest_chunks (
    chunk_index INTEGER PRIMARY KEY,
    first_example BIGINT NOT NULL,
    n_examples INTEGER NOT NULL,
    n_latents BIGINT NOT NULL,
    committed_at TIMESTAMP NOT NULL
);

-- Labels are append-only: every version is kept, the latest one is shown.
CREATE SEQUENCE label_ids START 1;

CREATE TABLE labels (
    label_id BIGINT PRIMARY KEY DEFAULT nextval('label_ids'),
    feature_id INTEGER NOT NULL,
    label VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE VIEW latest_labels AS
SELECT feature_id, label, description, author, source, created_at, label_id
FROM labels
QUALIFY row_number() OVER (PARTITION BY feature_id ORDER BY label_id DESC) = 1;
