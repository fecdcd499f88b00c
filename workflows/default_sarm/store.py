"""``sarm build-default``: the default SARM's feature store, from what the package ships.

The audit set is the held-out test split plus xstest. Their pooled latents
ship in ``audit/latents.parquet`` beside the weights; they are verified
against the shipped head (every reward recomputed from its latents) and
indexed without running the backbone. A conversation the file does not hold
(edited splits, a newer data file) is scored by the model, with a progress bar.
The store is written to a temporary file and renamed when complete.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from feature_store import CachedLatents, FeatureStore, ingest
from feature_store.annotations import annotations_path
from feature_store.explanations import explain_stats
from feature_store.text_ceiling import ceiling_line, save_with_ceilings
from sarm import cachedir
from sarm.checkpoints import load_sarm
from sarm.latents import PooledLatents, SparseLatents
from sarm.scoring import response_rows
from sarm.types import responses_of
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows, conversation_key
from workflows.default_sarm.data import load_split
from workflows.default_sarm.evidence_asset import (
    evidence_stamp,
    load_shipped_evidence,
    shipped_evidence_present,
)

AUDIT_SPLITS = ("test", "xstest")
STORE_SOURCE = "default audit set (test split + xstest)"
MANIFEST_FILE = "manifest.json"

logger = logging.getLogger(__name__)


@dataclass
class DefaultStoreReport:
    store_path: Path
    n_examples: int
    n_from_parts: int
    n_scored: int
    seconds: dict = field(default_factory=dict)
    cached: bool = False
    heldout: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "store_path": str(self.store_path),
            "n_examples": self.n_examples,
            "n_from_parts": self.n_from_parts,
            "n_scored": self.n_scored,
            "seconds": self.seconds,
            "cached": self.cached,
            "heldout": self.heldout,
        }


def shipped_manifest(root: Path | None = None) -> dict:
    path = (root or cachedir.shipped_default_dir()) / MANIFEST_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _stamp(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".built-from.json")


def is_built(store_path: Path, manifest: dict) -> bool:
    """True when the store exists and was built from these shipped weights."""
    stamp = _stamp(store_path)
    if not (store_path.is_file() and stamp.is_file()):
        return False
    built = json.loads(stamp.read_text())
    return built.get("plan_key") == manifest.get("plan_key") and built.get(
        "evidence", ""
    ) == evidence_stamp(manifest)


def _retire_other_build(store_path: Path, manifest: dict) -> None:
    """A store built from other weights is removed; its labels are kept aside, renamed."""
    stamp = _stamp(store_path)
    if not store_path.exists() or not stamp.is_file():
        return
    old = json.loads(stamp.read_text()).get("plan_key")
    if old == manifest.get("plan_key"):
        return
    store_path.unlink()
    labels = annotations_path(store_path)
    if labels.exists():
        labels.replace(labels.with_name(f"{labels.name}.from-{old}"))


def audit_groups(limit: int | None = None) -> list:
    groups = []
    for name in AUDIT_SPLITS:
        groups += load_split(name, limit=limit).groups
    return groups


def pooled_for(model, conversations, parts: AuditRows, progress: bool):
    """Pooled latents for ``conversations``: from the parts, the rest scored by ``model``."""
    row_of = {key: i for i, key in enumerate(parts.key)}
    keys = [conversation_key(c) for c in conversations]
    have = [row_of.get(k) for k in keys]
    missing = [i for i, r in enumerate(have) if r is None]
    k = parts.indices.shape[1]
    values = np.zeros((len(keys), k), np.float32)
    indices = np.zeros((len(keys), k), np.int32)
    rewards = np.zeros(len(keys))
    n_tokens = np.zeros(len(keys), np.int64)
    truncated = np.zeros(len(keys), bool)
    found = [i for i, r in enumerate(have) if r is not None]
    src = np.array([have[i] for i in found], dtype=np.int64)
    values[found], indices[found] = parts.values[src], parts.indices[src]
    rewards[found], n_tokens[found] = parts.reward[src], parts.n_tokens[src]
    truncated[found] = parts.truncated[src]
    if missing:
        scored = model.pooled_latents([conversations[i] for i in missing], progress=progress)
        for j, i in enumerate(missing):
            idx, val = scored.latents.row(j)
            indices[i, : len(idx)], values[i, : len(val)] = idx, val
        rewards[missing] = scored.rewards
        n_tokens[missing], truncated[missing] = scored.n_tokens, scored.truncated
    latents = SparseLatents.from_topk(values, indices, model.d_sae)
    return PooledLatents(latents, rewards, n_tokens, truncated), len(missing)


def build_default_store(
    store_path: Path | None = None,
    model_dir: Path | None = None,
    force: bool = False,
    progress: bool = True,
    limit: int | None = None,
) -> DefaultStoreReport:
    """Build (or reuse) the default's store; seconds when the shipped parts cover the data.

    ``model_dir`` (default: the shipped default) is a directory the default's
    build wrote (``sarm build-default --from-scratch --out DIR``).
    """
    store_path = store_path or cachedir.default_store_path()
    model_dir = model_dir or cachedir.shipped_default_dir()
    manifest = shipped_manifest(model_dir)
    if not force and limit is None and is_built(store_path, manifest):
        return DefaultStoreReport(store_path, -1, 0, 0, cached=True, heldout=manifest["heldout"])
    seconds = {}
    start = time.perf_counter()
    model = load_sarm(model_dir)
    parts = AuditRows.read(model_dir / AUDIT_FILE, model.head)
    seconds["load"] = round(time.perf_counter() - start, 1)
    groups = audit_groups(limit)
    _, conversations = response_rows(groups)
    distinct = list({json.dumps(c, sort_keys=True): c for c in conversations}.values())
    pooled, n_scored = pooled_for(model, distinct, parts, progress)
    memo = CachedLatents(model.fingerprint(), model.head, distinct, pooled, model.error_feature)
    seconds["latents"] = round(time.perf_counter() - start - seconds["load"], 1)
    store_path.parent.mkdir(parents=True, exist_ok=True)
    _retire_other_build(store_path, manifest)
    with_evidence = shipped_evidence_present(model_dir)
    with FeatureStore.building(store_path) as store:
        if with_evidence:
            examples = responses_of(groups)
            load_shipped_evidence(store, model_dir, examples, parts, manifest)
        report = ingest(store, memo, groups, source=STORE_SOURCE, progress=progress)
        seconds["ingest"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
        if with_evidence:  # explanations are written from the evidence, with their ceilings
            found, explained = explain_stats(store)
            ceilings = save_with_ceilings(store, found)
            logger.info("%s; %s", explained.summary(), ceiling_line(ceilings))
            seconds["explain"] = round(time.perf_counter() - start - sum(seconds.values()), 1)
        else:
            logger.warning(
                "%s has no evidence/ folder: the store is built without feature evidence or "
                "explanations (run python -m workflows.default_sarm.evidence_run, then "
                "evidence_asset --model-dir %s, and build again)",
                model_dir,
                model_dir,
            )
    stamp = {"plan_key": manifest.get("plan_key"), "evidence": evidence_stamp(manifest)}
    _stamp(store_path).write_text(json.dumps(stamp))
    seconds["total"] = round(time.perf_counter() - start, 1)
    return DefaultStoreReport(
        store_path,
        report.n_examples,
        len(distinct) - n_scored,
        n_scored,
        seconds,
        heldout=manifest.get("heldout", {}),
    )
