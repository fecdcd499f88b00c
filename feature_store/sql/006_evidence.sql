-- Version 6: feature evidence (issue 12), written by the indexing forward pass in the
-- same transaction as each chunk, and its per-feature aggregates written by the
-- statistics refresh (feature_store.evidence). A store indexed without evidence keeps
-- these tables empty.

-- A response's tokens, from its first response token to the scored end-of-turn token
-- (scored = its index, the last one); the system prompt and the question are not kept.
CREATE TABLE evidence_responses (
    example_id BIGINT PRIMARY KEY,
    tokens VARCHAR[] NOT NULL,
    token_ids INTEGER[] NOT NULL,
    scored INTEGER NOT NULL
);

-- Per feature active at the scored token of a response: its peak token over the
-- response and its activations at tokens start .. start + len(activations) - 1.
CREATE TABLE evidence_windows (
    example_id BIGINT NOT NULL,
    feature_id INTEGER NOT NULL,
    peak INTEGER NOT NULL,
    peak_activation FLOAT NOT NULL,
    start INTEGER NOT NULL,
    activations FLOAT[] NOT NULL
);

-- Per chunk: response tokens seen, and per feature the tokens / responses where it is
-- active and a histogram over sarm.explain.evidence.HIST_EDGES.
CREATE TABLE evidence_chunks (
    chunk_index INTEGER PRIMARY KEY,
    n_tokens BIGINT NOT NULL,
    n_responses BIGINT NOT NULL,
    window_size INTEGER NOT NULL
);

CREATE TABLE evidence_counts (
    chunk_index INTEGER NOT NULL,
    feature_id INTEGER NOT NULL,
    active_tokens BIGINT NOT NULL,
    active_responses BIGINT NOT NULL,
    histogram BIGINT[] NOT NULL
);

-- Aggregates (rewritten by every statistics refresh).
CREATE TABLE feature_density (
    feature_id INTEGER PRIMARY KEY,
    active_tokens BIGINT NOT NULL,
    n_tokens BIGINT NOT NULL,
    token_fraction DOUBLE NOT NULL,
    active_responses BIGINT NOT NULL,
    n_responses BIGINT NOT NULL,
    response_fraction DOUBLE NOT NULL,
    histogram BIGINT[] NOT NULL,
    abs_contribution_share DOUBLE NOT NULL
);

-- Tokens (kind 'token') and bigrams (kind 'bigram') over-represented at the active
-- tokens of a feature's explanation windows against a seeded background sample.
CREATE TABLE feature_contrastive (
    feature_id INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    text VARCHAR NOT NULL,
    active_count BIGINT NOT NULL,
    active_total BIGINT NOT NULL,
    background_count BIGINT NOT NULL,
    background_total BIGINT NOT NULL,
    ratio DOUBLE NOT NULL
);

-- Share of a feature's activations (at the scored token) by metadata value, and the
-- SARM preference score s = (c - j) / (c + j + mean) within that value.
CREATE TABLE feature_metadata (
    feature_id INTEGER NOT NULL,
    field VARCHAR NOT NULL,
    value VARCHAR NOT NULL,
    n_active BIGINT NOT NULL,
    n_total BIGINT NOT NULL,
    share DOUBLE NOT NULL,
    lift DOUBLE NOT NULL,
    chosen BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    preference_score DOUBLE
);

-- Logit lens (kind 'promoted' / 'suppressed': token text and logit) and nearest
-- features by decoder cosine (kind 'neighbour': neighbour id and cosine), written at
-- ingest from the model; meta key decoder_note says why there is no lens.
CREATE TABLE feature_decoder (
    feature_id INTEGER NOT NULL,
    kind VARCHAR NOT NULL,
    rank INTEGER NOT NULL,
    text VARCHAR,
    neighbour INTEGER,
    value DOUBLE NOT NULL
);

-- Which windows wrote an explanation (split 'explain') and which score it
-- (split 'heldout', active or not at the scored token): seeded, disjoint.
CREATE TABLE feature_window_splits (
    feature_id INTEGER NOT NULL,
    split VARCHAR NOT NULL,
    example_id BIGINT NOT NULL,
    active BOOLEAN NOT NULL
);
