"""Public held-out pairwise preference test sets (``data/heldout``).

Small (at most 200 pairs each), deterministic subsamples of public benchmarks
(LLMBar, JudgeBench, RM-Bench, Auto-J, EvalBiasBench) in the project's
preference schema, kept apart from every training split: no prompt in them
occurs in ``data/prefs/splits/train.jsonl.gz``. Sources, commits, licences and
what "chosen" means per set are in ``data/heldout/NOTICE.md``; row counts,
per-subset counts, dropped counts and sha256 in ``data/heldout/MANIFEST.json``.
Rebuild with ``python scripts/build_heldout.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from sarm.errors import InputError

__all__ = [
    "HELDOUT_DIR",
    "MANIFEST_NAME",
    "heldout_manifest",
    "heldout_path",
    "heldout_sets",
    "load_heldout",
]

HELDOUT_DIR = Path(__file__).resolve().parent.parent.parent / "data" / "heldout"
MANIFEST_NAME = "MANIFEST.json"


def heldout_manifest(directory: Path = HELDOUT_DIR) -> dict:
    """The parsed ``MANIFEST.json`` of the held-out sets."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise InputError(
            f"held-out manifest not found: {path} (build it with scripts/build_heldout.py)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def heldout_sets(directory: Path = HELDOUT_DIR) -> list[str]:
    """Names of the held-out sets, in manifest order."""
    return list(heldout_manifest(directory)["sets"])


def heldout_path(name: str, directory: Path = HELDOUT_DIR) -> Path:
    """Path of the ``.jsonl.gz`` file of held-out set ``name``."""
    sets = heldout_manifest(directory)["sets"]
    if name not in sets:
        raise InputError(f"unknown held-out set {name!r}; known sets: {', '.join(sets)}")
    path = Path(directory) / sets[name]["file"]
    if not path.is_file():
        raise InputError(
            f"held-out set {name!r} is listed in the manifest but its file is missing: {path}"
        )
    return path


def load_heldout(name: str, directory: Path = HELDOUT_DIR):
    """Load held-out set ``name`` with :func:`sarm.data.load_preferences`."""
    from sarm.data import load_preferences

    return load_preferences(heldout_path(name, directory))
