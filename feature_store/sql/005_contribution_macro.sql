-- The store's one copy of the head formula, c_i = w_i * z_i under the ingest head, in
-- DOUBLE like sarm.head (a float32 x float32 product is exact there): the macro
-- `contribution`, and the view `contributions` of every stored latent, rebuilt on it.
-- Queries over the latents of one example read the view; queries over a few
-- preselected examples of one feature call the macro (a join with the view would scan
-- every latent of that feature). The stored reward of an example is
-- sum_i c_i + head_bias (sarm.head.Head.rewards computes it at ingest).
-- tests/store/test_contributions_view.py checks both against sarm.head.Head.contributions.
CREATE MACRO contribution(activation, weight) AS activation::DOUBLE * weight::DOUBLE;

CREATE OR REPLACE VIEW contributions AS
SELECT x.example_id, x.feature_id, x.activation, w.weight,
       contribution(x.activation, w.weight) AS contribution
FROM latents x JOIN head_weights w USING (feature_id);
