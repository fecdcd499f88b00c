"""SARM: sparse-autoencoder reward models you can audit and steer.

The score of a response is an exact sum of interpretable terms: a backbone cut
at layer ``L``, a per-token standardisation, a TopK sparse autoencoder and a
linear head over the SAE latents at the final end-of-turn token.

Names are imported lazily so that ``import sarm.data`` stays cheap (the model
side pulls in torch, transformers and sae-lens).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SARM": "sarm.model",
    "Score": "sarm.model",
    "PooledLatents": "sarm.latents",
    "SparseLatents": "sarm.latents",
    "PairIndex": "sarm.evaluate",
    "TokenActivations": "sarm.model",
    "TokenLatents": "sarm.model",
    "Head": "sarm.head",
    "Backbone": "sarm.backbones",
    "load_backbone": "sarm.backbones",
    "load_sarm": "sarm.checkpoints",
    "save_sarm": "sarm.checkpoints",
    "pair_decomposition": "sarm.attribution",
    "score_top": "sarm.attribution",
    "top_contributions": "sarm.attribution",
    "PreferenceGroup": "sarm.types",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
