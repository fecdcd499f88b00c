-- Version 9: source-matched held-out negatives (issue 22). Split 'matched' holds, per
-- feature, responses where it does not fire at the scored token drawn from the same
-- source and subset (and length bin, where enough exist) as one of its held-out
-- positives: matched_to is that positive's example id, centre the token the negative
-- window is centred on (the positive's peak, counted from the same end of the
-- response). A detection score on them cannot be earned by naming a dataset. Rows of
-- older splits keep NULL; the next statistics refresh (or `sarm explain`) draws them.
ALTER TABLE feature_window_splits ADD COLUMN IF NOT EXISTS matched_to BIGINT;
ALTER TABLE feature_window_splits ADD COLUMN IF NOT EXISTS centre INTEGER;
