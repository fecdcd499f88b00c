"""The shipped default: its manifest's held-out figures re-derive from the shipped files.

No backbone pass: the audit latents ship beside the weights, are verified
against the shipped head (every reward recomputed), and the held-out report is
recomputed from them and the vendored splits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from sarm.cachedir import shipped_default_dir
from sarm.constants import SARM_CONFIG_FILE
from sarm.head import Head
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows, conversation_key
from workflows.default_sarm.build import MANIFEST_FILE, file_sha256
from workflows.default_sarm.data import load_split, splits_dir
from workflows.default_sarm.report import length_baselines, split_report
from workflows.default_sarm.store import AUDIT_SPLITS

ROOT = shipped_default_dir()
MAX_SHIPPED_MB = 60


@pytest.fixture(scope="module")
def manifest():
    return json.loads((ROOT / MANIFEST_FILE).read_text())


def test_shipped_files_are_complete_and_small():
    for name in (SARM_CONFIG_FILE, "head.safetensors", "dense_baseline.safetensors",
                 "sae/cfg.json", "sae/sae_weights.safetensors", AUDIT_FILE, MANIFEST_FILE):  # fmt: skip
        assert (ROOT / name).is_file(), name
    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total < MAX_SHIPPED_MB * 1e6, f"{total / 1e6:.1f} MB shipped"


def test_manifest_names_the_split_files_it_was_built_from(manifest):
    for name, digest in manifest["data"]["splits_sha256"].items():
        assert file_sha256(splits_dir() / f"{name}.jsonl.gz") == digest, name


def test_heldout_figures_re_derive_from_the_shipped_latents(manifest):
    head = Head.load(ROOT / "head.safetensors")
    parts = AuditRows.read(ROOT / AUDIT_FILE, head)  # verifies every reward against the head
    row_of = {key: i for i, key in enumerate(parts.key)}
    for name in AUDIT_SPLITS:
        split = load_split(name)
        rows = np.array([row_of[conversation_key(c)] for c in split.conversations])
        assert set(parts.split[rows]) == {name}
        rewards = {"sarm": parts.reward[rows], **length_baselines(split)}
        again = split_report(split, rewards)
        for head_name, figures in again.items():
            assert figures == manifest["heldout"][name][head_name], (name, head_name)


def test_sae_weights_ship_in_float16():
    from safetensors import safe_open

    with safe_open(str(ROOT / "sae" / "sae_weights.safetensors"), "np") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
    assert dtypes == {np.dtype("float16")}
