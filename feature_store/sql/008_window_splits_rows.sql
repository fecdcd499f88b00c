-- Version 8: the explanation and held-out windows carry their window (start,
-- activations, peak; NULL for negatives), copied from evidence_windows by each
-- statistics refresh and written in feature order. A feature page then reads its
-- few dozen rows, which DuckDB's zone maps find without scanning evidence_windows
-- (one row per response x feature active at the scored token: 30 M rows at the
-- released model's shape). Existing rows are filled here once; the next refresh
-- also sorts them.
ALTER TABLE feature_window_splits ADD COLUMN IF NOT EXISTS start INTEGER;
ALTER TABLE feature_window_splits ADD COLUMN IF NOT EXISTS activations FLOAT[];
ALTER TABLE feature_window_splits ADD COLUMN IF NOT EXISTS peak INTEGER;

UPDATE feature_window_splits s
SET start = w.start, activations = w.activations, peak = w.peak
FROM evidence_windows w
WHERE w.feature_id = s.feature_id AND w.example_id = s.example_id AND s.active;
