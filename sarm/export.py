"""Handing over an edited reward head.

An edit is a :class:`~sarm.head.Head` with weight overrides on a named base
head (a saved version). It exports as

- the head alone: ``head.safetensors`` (``score.weight [1, m]``, ``score.bias``
  when non-zero) and ``head_manifest.json`` saying what it was derived from
  (base model, SAE, parent head hash), every changed weight with its feature
  label, and the dataset metrics before and after;
- a complete checkpoint in our layout (:func:`sarm.checkpoints.save_sarm`) that
  ``load_sarm`` reads and that scores exactly as the edit was previewed.

The head rounds override values to float32 on the way in, the precision of
the stored head, so the preview computed from them and the exported head agree
bit for bit.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import stat
import tempfile
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save

from sarm.checkpoints import load_sarm, save_sarm
from sarm.constants import HEAD_MANIFEST_FILE, HEAD_WEIGHTS_FILE
from sarm.head import Head
from sarm.model import SARM

MANIFEST_FORMAT = "sarm-head-edit"
MANIFEST_VERSION = 1


def json_safe(value: Any) -> Any:
    """``value`` with NaN/inf floats (at any depth) replaced by None: strict JSON."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def model_info(model: SARM) -> dict[str, dict[str, Any]]:
    """What identifies a SARM in a manifest: its backbone and layer, and its SAE."""
    fp = model.fingerprint()
    return {
        "base_model": {
            "backbone": model.backbone.name,
            "layer": model.layer,
            "source": model.source.get("path", ""),
            "fingerprint": {k: v for k, v in fp.items() if k != "head"},
        },
        "sae": {
            "hash": fp["sae"],
            "d_sae": model.d_sae,
            "k": model.k,
            "use_activation": bool(model.sae_meta.use_activation),
        },
    }


def edit_manifest(
    edit: Head,
    info: Mapping[str, Mapping[str, Any]],
    *,
    labels: Mapping[int, str] | None = None,
    metrics_before: Mapping[str, Any] | None = None,
    metrics_after: Mapping[str, Any] | None = None,
    note: str = "",
    author: str = "",
    store: str | None = None,
) -> dict[str, Any]:
    """The JSON manifest of an exported head (see the module docstring)."""
    labels = labels or {}
    head, parent = edit.applied(), edit.base()
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "base_model": dict(info.get("base_model", {})),
        "sae": dict(info.get("sae", {})),
        "parent_head": {"name": edit.name, "hash": parent.hash(), "bias": parent.bias},
        "head": {
            "file": HEAD_WEIGHTS_FILE,
            "hash": head.hash(),
            "bias": head.bias,
            "d_sae": head.size,
        },
        "changes": [
            {
                "feature_id": f,
                "label": labels.get(f, ""),
                "old_weight": old,
                "new_weight": new,
                "delta": new - old,
            }
            for f, old, new in edit.changes()
        ],
        "metrics_before": json_safe(dict(metrics_before or {})),
        "metrics_after": json_safe(dict(metrics_after or {})),
        "note": note,
        "author": author,
        "store": store,
    }


def head_files(edit: Head, manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """``{"head.safetensors": ..., "head_manifest.json": ...}`` as bytes (for downloads)."""
    meta = {"head_hash": edit.hash(), "parent_head_hash": edit.base().hash()}
    return {
        HEAD_WEIGHTS_FILE: save(edit.to_tensors(), metadata=meta),
        HEAD_MANIFEST_FILE: (json.dumps(manifest, indent=2, allow_nan=False) + "\n").encode(),
    }


def zip_files(files: Mapping[str, bytes]) -> bytes:
    """A zip archive of ``{name: bytes}``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def check_output_dir(text: str, *, must_be_new: bool = True) -> Path:
    """A user-typed output directory, checked before anything is written.

    The parent must exist; with ``must_be_new`` the directory itself must not
    exist or be empty, so an export never overwrites anything.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("give a directory path to write to")
    if "\x00" in text:
        raise ValueError("the directory path contains a NUL character")
    path = Path(text.strip()).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} exists and is not a directory")
    if not path.parent.is_dir():
        raise ValueError(f"the parent directory {path.parent} does not exist; create it first")
    if must_be_new and path.is_dir() and any(path.iterdir()):
        raise ValueError(f"{path} is not empty; choose a new directory (nothing is overwritten)")
    return path


def write_head(edit: Head, manifest: Mapping[str, Any], directory: str | Path) -> list[Path]:
    """Write ``head.safetensors`` and ``head_manifest.json`` into a new or empty directory."""
    target = check_output_dir(str(directory))
    target.mkdir(exist_ok=True)
    written = []
    for name, data in head_files(edit, manifest).items():
        tmp = target / (name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(target / name)
        written.append(target / name)
    return written


def edited_model(model: SARM, edit: Head) -> SARM:
    """A new SARM sharing ``model``'s backbone and SAE, with the edited head (``model`` unchanged)."""
    if edit.size != model.d_sae:
        raise ValueError(f"the edit has {edit.size} weights; the model's SAE has {model.d_sae}")
    return SARM(model.backbone, model.sae, edit.applied(), model.sae_meta, source=model.source)


def write_checkpoint(
    model: SARM,
    edit: Head,
    manifest: Mapping[str, Any],
    directory: str | Path,
    *,
    include_backbone: bool = False,
) -> Path:
    """A complete checkpoint (our layout) with the edited head, plus its manifest.

    Written into a temporary sibling directory and renamed into place, so a
    failed export leaves nothing behind. Directories and files get the usual
    permissions (0755 and 0644 under the usual umask), not a private temporary
    directory's 0700.
    """
    target = check_output_dir(str(directory))
    edited = edited_model(model, edit)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()  # mode 0777 minus the umask, unlike tempfile.mkdtemp's 0700
    try:
        save_sarm(edited, tmp, include_backbone=include_backbone)
        (tmp / HEAD_MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        )
        _usual_permissions(tmp)
        if target.is_dir():
            target.rmdir()  # checked empty above
        tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _usual_permissions(root: Path) -> None:
    """Give every file under ``root`` the mode a new file gets (some writers use 0600).

    ``root`` was made with ``mkdir``, so its mode is 0777 minus the umask; files
    get that without the execute bits.
    """
    dir_mode = stat.S_IMODE(root.stat().st_mode)
    for path in root.rglob("*"):
        path.chmod(dir_mode if path.is_dir() else dir_mode & 0o666)


def checkpoint_zip(
    model: SARM, edit: Head, manifest: Mapping[str, Any], name: str = "sarm-edited"
) -> bytes:
    """The checkpoint of :func:`write_checkpoint` (without the backbone) as a zip archive."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_checkpoint(model, edit, manifest, Path(tmp) / name)
        files = {
            str(p.relative_to(root.parent)): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }
    return zip_files(files)


def checkpoint_rewards(
    directory: str | Path, conversations: Sequence[Sequence[dict]]
) -> np.ndarray:
    """Load an exported checkpoint with ``load_sarm`` and score ``conversations``."""
    model = load_sarm(directory)
    scores = model.score_batch([list(c) for c in conversations])
    return np.asarray([s.reward for s in scores], dtype=np.float64)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The ``head_manifest.json`` of an exported head or checkpoint."""
    path = Path(directory) / HEAD_MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {HEAD_MANIFEST_FILE} in {directory}")
    return json.loads(path.read_text())


__all__ = [
    "check_output_dir",
    "checkpoint_rewards",
    "checkpoint_zip",
    "edit_manifest",
    "edited_model",
    "head_files",
    "json_safe",
    "model_info",
    "read_manifest",
    "write_checkpoint",
    "write_head",
    "zip_files",
]
