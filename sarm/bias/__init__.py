"""The bias audit: what a SARM's reward pays for that it should not, and which features pay it.

:mod:`~sarm.bias.properties` (response properties, a registry),
:mod:`~sarm.bias.operators` (content-keeping rewrites), :mod:`~sarm.bias.observational`
(correlations over a dataset), :mod:`~sarm.bias.counterfactual` (rewrites rescored, every
delta-r decomposed exactly over features), :mod:`~sarm.bias.fix` (a head edit that stops
paying). See docs/bias_audit.md.
"""
