-- Version 2: per-feature statistics, histograms and example selections,
-- recomputed in SQL after ingest (feature_store.stats).

CREATE TABLE feature_stats (
    feature_id INTEGER PRIMARY KEY,
    n_active BIGINT NOT NULL,
    frequency DOUBLE NOT NULL,
    mean_activation DOUBLE,
    max_activation DOUBLE,
    min_activation DOUBLE,
    weight DOUBLE NOT NULL,
    mean_contribution DOUBLE NOT NULL,
    chosen_mean DOUBLE,
    rejected_mean DOUBLE,
    salience DOUBLE
);

-- Non-empty bins only; bin b spans min + b * (max - min) / n_bins.
CREATE TABLE feature_histograms (
    feature_id INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    count BIGINT NOT NULL
);

-- band 0: the top-N examples (rank 1..N); bands 1..Q: samples spread evenly
-- over Q equal-count activation quantiles of the remaining active examples.
CREATE TABLE feature_examples (
    feature_id INTEGER NOT NULL,
    band INTEGER NOT NULL,
    rank BIGINT NOT NULL,
    example_id BIGINT NOT NULL,
    activation FLOAT NOT NULL
);
