-- Version 6 (rename to 007 when merged after 006_evidence): the pooled latents again,
-- sorted by feature id, rebuilt by refresh_stats in the statistics' transaction.
-- `latents` stays in example order (a chunk commit is an append; an example's latents
-- are one row group); queries that read many examples of a few features (live top
-- examples beyond the stored top-N, per-feature audits) read this copy, where DuckDB's
-- zone maps skip every row group without the feature. It costs as much disk as
-- `latents` (~6.4 MB per million rows) and a sort per statistics refresh (docs/scale.md).
CREATE TABLE latents_by_feature (
    feature_id INTEGER NOT NULL,
    example_id BIGINT NOT NULL,
    activation FLOAT NOT NULL
);

INSERT INTO latents_by_feature
SELECT feature_id, example_id, activation FROM latents ORDER BY feature_id, example_id;
