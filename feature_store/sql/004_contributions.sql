-- The store's one copy of the head formula, per stored latent: c_i = w_i * z_i under the
-- ingest head, in DOUBLE like sarm.head (a float32 x float32 product is exact there).
-- Every query that shows a contribution reads it from here; the stored reward
-- of an example is sum_i c_i + head_bias (sarm.head.Head.rewards computes it at ingest).
-- tests/store/test_contributions_view.py checks it against sarm.head.Head.contributions.
CREATE VIEW contributions AS
SELECT x.example_id, x.feature_id, x.activation, w.weight,
       x.activation::DOUBLE * w.weight::DOUBLE AS contribution
FROM latents x JOIN head_weights w USING (feature_id);
