"""SARM: sparse-autoencoder reward models you can audit and steer.

The score of a response is an exact sum of interpretable terms: a backbone cut
at layer ``L``, a per-token standardisation, a TopK sparse autoencoder and a
linear head over the SAE latents at the final end-of-turn token.
"""

from sarm.attribution import pair_decomposition, score_top, top_contributions
from sarm.backbones import Backbone, load_backbone
from sarm.checkpoints import load_sarm, save_sarm
from sarm.head import LinearHead
from sarm.model import SARM, PooledLatents, Score, TokenActivations, TokenLatents
from sarm.types import PreferenceGroup

__all__ = [
    "SARM",
    "Backbone",
    "LinearHead",
    "PooledLatents",
    "PreferenceGroup",
    "Score",
    "TokenActivations",
    "TokenLatents",
    "load_backbone",
    "load_sarm",
    "pair_decomposition",
    "save_sarm",
    "score_top",
    "top_contributions",
]
__version__ = "0.1.0"
