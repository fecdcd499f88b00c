"""The application layer without UI: the `sarm` command and the workflows behind it.

It may import the store (:mod:`feature_store`) and the library (:mod:`sarm`);
neither imports it.
"""
