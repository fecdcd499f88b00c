"""A tiny SARM and feature store for the dashboard tests, built once per test session.

The model is saved in our layout with its backbone included, so a subprocess
(``streamlit run``) can load it with ``load_sarm`` exactly as the tests do.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from helpers import make_tiny_sarm

from feature_store import FeatureStore, ingest
from feature_store.annotations import annotations_path
from sarm import load_sarm
from sarm.checkpoints import save_sarm
from sarm.explain.evidence import EvidenceSpec
from sarm.head import Head
from sarm.model import SARM
from sarm.residual import ErrorReadout
from sarm.types import PreferenceGroup

TOPICS = ["the weather", "a python bug", "a poem about cats", "tax rules", "a recipe", "chess"]
SUBSETS = ["chat", "code", "safety"]


@dataclass(frozen=True)
class AppEnv:
    model_dir: Path
    store_path: Path


def app_groups(n: int = 12) -> list[PreferenceGroup]:
    """Pairs in three subsets, a best-of-N group, a single response and an RM-Bench group."""
    groups = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        prompt = ({"role": "user", "content": f"Tell me about {topic} ({i})."},)
        good = f"Here is a careful answer about {topic}." + " More detail." * (i % 3)
        bad = f"No. {topic}?" if i % 2 else "I refuse <b>&amp;</b> stop."
        groups.append(
            PreferenceGroup(f"g{i}", prompt, (good,), (bad,), subset=SUBSETS[i % len(SUBSETS)])
        )
    p = ({"role": "user", "content": "Pick the best answer about tea."},)
    groups.append(
        PreferenceGroup(
            "bon",
            p,
            ("Tea is brewed leaves.",),
            ("Tea?", "No.", "Coffee."),
            subset="chat",
            kind="best_of_n",
        )
    )
    groups.append(PreferenceGroup("one", p, ("Just tea.",), kind="single", label=1.0))
    styles = ("Tea is leaves.", "Tea is made from the leaves of a plant.", "**Tea**: leaves.")
    wrong = ("Tea is rocks.", "Tea is made from crushed rocks, boiled.", "**Tea**: rocks.")
    groups.append(PreferenceGroup("rm", p, styles, wrong, subset="rmbench", kind="rmbench"))
    return groups


def build_app_env(root: Path, error_readout: bool = False) -> AppEnv:
    """Build (or reuse, within one session) the tiny model and its store under ``root``.

    With ``error_readout`` the model also reads the SAE error (:mod:`sarm.residual`).
    """

    model_dir, store_path = root / "model", root / "store.duckdb"
    done = root / "done"
    if done.is_file():
        return AppEnv(model_dir, store_path)
    tiny = make_tiny_sarm(root / "released", seed=3, d_sae=64, k=8)
    if error_readout:
        tiny = with_error_readout(tiny)
    save_sarm(tiny, model_dir, include_backbone=True)
    model = load_sarm(model_dir)
    with FeatureStore.open(store_path) as store:
        ingest(
            store,
            model,
            app_groups(),
            batch_size=8,
            chunk_size=16,
            top_n=5,
            progress=False,
            evidence=EvidenceSpec(4),
        )
        store.set_label(int(store.features(limit=1)["feature_id"][0]), "Strongest feature", "top")
    done.write_text("ok")
    return AppEnv(model_dir, store_path)


def with_error_readout(model, seed: int = 11):
    """``model`` reading the SAE error along a random direction, paid by a random weight."""
    rng = np.random.default_rng(seed)
    v = rng.normal(size=model.backbone.d_model)
    weights = np.append(model.head.weight, 2.0).astype(np.float32)
    return SARM(
        model.backbone, model.sae, Head(weights, model.head.bias), model.sae_meta,
        error_readout=ErrorReadout(v / np.linalg.norm(v)),
    )  # fmt: skip


def copy_store(env: AppEnv, target: Path) -> Path:
    """A private copy of the store (tests that write labels or heads use their own)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(env.store_path, target)
    labels = annotations_path(env.store_path)  # its labels and head versions live beside it
    if labels.exists():
        shutil.copy(labels, annotations_path(target))
    return target
