"""The embedded default: demo preference data generator and build pipeline.

Kept free of heavy imports: :mod:`sarm.demo.data` is the data generator,
:mod:`sarm.demo.build` the pipeline behind ``sarm build-demo``.
"""

from sarm.demo.paths import DEMO_NAME, demo_root, model_dir, store_path

__all__ = ["DEMO_NAME", "demo_root", "model_dir", "store_path"]
