"""The real default SARM: built from the vendored human-labelled preference splits.

``data`` loads the splits and numbers their distinct responses; ``capture`` runs
the one multi-layer backbone pass; ``sweep`` compares layers, SAE levels,
dictionary sizes and k on the dev split; ``build`` trains the winner, evaluates
it on the held-out test split and writes the shipped artefacts.
"""
