"""The embedded default: demo preference data generator and build pipeline.

Kept free of heavy imports; import :mod:`sarm.demo.data` for the generator.
"""
