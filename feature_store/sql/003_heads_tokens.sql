-- Version 3: named head versions and the per-token activation cache.

CREATE TABLE head_versions (
    name VARCHAR PRIMARY KEY,
    parent VARCHAR,
    note VARCHAR NOT NULL,
    author VARCHAR NOT NULL,
    metrics VARCHAR NOT NULL,
    bias DOUBLE NOT NULL,
    weights FLOAT[] NOT NULL,
    created_at TIMESTAMP NOT NULL
);

-- Tokens and reward trajectory r_t of an example, computed on demand.
CREATE TABLE token_cache (
    example_id BIGINT PRIMARY KEY,
    tokens VARCHAR[] NOT NULL,
    trajectory FLOAT[] NOT NULL,
    head VARCHAR NOT NULL
);

-- Per-token activations z_t of one feature on one example, computed on demand.
CREATE TABLE token_activations (
    example_id BIGINT NOT NULL,
    feature_id INTEGER NOT NULL,
    activations FLOAT[] NOT NULL,
    PRIMARY KEY (example_id, feature_id)
);
