"""Handing over an edited reward head.

An edit is a :class:`~sarm.head.Head` with weight overrides on a named base
head (a saved version). It exports as

- the head alone: ``head.safetensors`` (``score.weight [1, m]``, ``score.bias``
  when non-zero) and ``head_manifest.json`` saying what it was derived from
  (base model, SAE, parent head hash), every changed weight with its feature
  label, and the dataset metrics before and after;
- a complete checkpoint in our layout (:func:`sarm.checkpoints.save_sarm`) that
  ``load_sarm`` reads and that scores exactly as the edit was previewed;
- for a model loaded from a released (Llama-SARM) checkpoint, a copy of that
  checkpoint in its own layout (:func:`write_released`) in which only
  ``score.weight`` differs: shards without the head are hard-linked (or copied
  byte for byte), the shard holding the head is rewritten with every other
  tensor's bytes unchanged, and the manifest rides beside it.

The head rounds override values to float32 on the way in, the precision of
the stored head, so the preview computed from them and the exported head agree
bit for bit.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import stat
import struct
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save

from sarm.checkpoints import load_sarm, safetensors_files, save_sarm
from sarm.constants import HEAD_MANIFEST_FILE, HEAD_WEIGHTS_FILE, RELEASED_CONFIG_FILE
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
            "error_feature": model.error_feature,
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
    return SARM(
        model.backbone,
        model.sae,
        edit.applied(),
        model.sae_meta,
        source=model.source,
        error_readout=model.error_readout,
    )


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
    with _staged(target) as tmp:
        save_sarm(edited, tmp, include_backbone=include_backbone)
        _write_head_manifest(tmp, manifest)
        _usual_permissions(tmp)
    return target


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A temporary sibling of ``target`` to write into: renamed onto ``target`` (empty or
    absent, checked by the caller) when the block succeeds, removed when it fails."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()  # mode 0777 minus the umask, unlike tempfile.mkdtemp's 0700
    try:
        yield tmp
        if target.is_dir():
            target.rmdir()
        tmp.replace(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_head_manifest(directory: Path, manifest: Mapping[str, Any]) -> None:
    (directory / HEAD_MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, allow_nan=False) + "\n"
    )


def _usual_permissions(root: Path, skip: set[Path] | frozenset[Path] = frozenset()) -> None:
    """Give every file under ``root`` the mode a new file gets (some writers use 0600).

    ``root`` was made with ``mkdir``, so its mode is 0777 minus the umask; files
    get that without the execute bits. ``skip`` (hard links to someone else's
    files) keep theirs.
    """
    dir_mode = stat.S_IMODE(root.stat().st_mode)
    for path in root.rglob("*"):
        if path in skip:
            continue
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


# --------------------------------------------------------------------------- released layout

#: the shard index of a sharded released checkpoint
SHARD_INDEX_FILE = "model.safetensors.index.json"
HEAD_KEY, BIAS_KEY = "score.weight", "score.bias"
#: safetensors dtype names a released head may be stored in
HEAD_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}
COPY_CHUNK = 1 << 24


@dataclass(frozen=True)
class ReleasedExport:
    """What :func:`write_released` did, file by file."""

    path: Path
    rewritten: tuple[str, ...]  # the shards holding the head, rewritten
    linked: tuple[str, ...]  # shards hard-linked to the source's
    copied: tuple[str, ...]  # files copied byte for byte
    head_dtype: str  # the safetensors dtype score.weight was written in
    widened: bool  # the source dtype could not hold the edit exactly: written as F32
    skipped: tuple[str, ...] = field(default=())  # sub-directories, hidden files


def released_source(model: SARM) -> Path | None:
    """The released-layout checkpoint directory ``model`` was loaded from (None if another)."""
    if model.source.get("layout") != "released":
        return None
    path = Path(model.source.get("path", ""))
    return path if (path / RELEASED_CONFIG_FILE).is_file() else None


def read_safetensors_header(path: str | Path) -> tuple[int, dict[str, Any]]:
    """``(data_start, header)`` of a safetensors file: where tensor data begins, and the
    JSON header (``{name: {"dtype", "shape", "data_offsets"}}`` plus ``__metadata__``)."""
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a safetensors file (bad header: {exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file (bad header)")
    return 8 + n, header


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's raw little-endian bytes, as safetensors stores them."""
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def _stored_tensor(path: Path, start: int, entry: Mapping[str, Any]) -> torch.Tensor:
    begin, end = entry["data_offsets"]
    with open(path, "rb") as fh:
        fh.seek(start + begin)
        raw = bytearray(fh.read(end - begin))
    flat = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.zeros(0, dtype=torch.uint8)
    return flat.view(HEAD_DTYPES[entry["dtype"]]).reshape(entry["shape"]).clone()


def _edited_tensor(
    path: Path, start: int, key: str, entry: Mapping[str, Any], target: np.ndarray
) -> tuple[torch.Tensor, bool]:
    """The stored ``key`` with the entries that differ from ``target`` (float32) replaced.

    Entries already equal to ``target`` keep their stored bytes. Returns the tensor and
    whether it had to be widened to float32 to hold ``target`` exactly.
    """
    if entry.get("dtype") not in HEAD_DTYPES:
        raise ValueError(
            f"{path}: {key} is stored as {entry.get('dtype')}; only floating-point heads "
            "can be exported in the released layout"
        )
    stored = _stored_tensor(path, start, entry)
    if stored.numel() != target.size:
        raise ValueError(
            f"{path}: {key} has {stored.numel()} values but the edited head has {target.size}; "
            "the checkpoint on disk is not the one this model was loaded from"
        )
    want = torch.from_numpy(np.array(target, dtype=np.float32, copy=True)).reshape(stored.shape)
    differ = stored.float() != want
    out = stored.clone()
    out[differ] = want[differ].to(stored.dtype)
    if torch.equal(out.float(), want):
        return out, False
    return want.clone(), True


def _rewrite_safetensors(
    src: Path, dst: Path, start: int, header: dict[str, Any], new: Mapping[str, torch.Tensor]
) -> None:
    """Copy ``src`` to ``dst`` with the tensors in ``new`` replaced.

    When every replacement has its stored dtype (the same byte size), the copy keeps the
    header and every other byte and only the replaced tensors' bytes are overwritten.
    Otherwise the header is rebuilt (tensors in their stored order, offsets moved) and
    every other tensor's bytes are streamed over unchanged.
    """
    dtype_names = {v: k for k, v in HEAD_DTYPES.items()}
    same_size = all(
        dtype_names[t.dtype] == header[k]["dtype"] and list(t.shape) == header[k]["shape"]
        for k, t in new.items()
    )
    if same_size:
        shutil.copyfile(src, dst)
        with open(dst, "r+b") as fh:
            for key, t in new.items():
                fh.seek(start + header[key]["data_offsets"][0])
                fh.write(_tensor_bytes(t))
        return
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"]
    )
    out_header: dict[str, Any] = {}
    if "__metadata__" in header:
        out_header["__metadata__"] = header["__metadata__"]
    offset = 0
    for name in names:
        entry = dict(header[name])
        size = (
            len(_tensor_bytes(new[name]))
            if name in new
            else entry["data_offsets"][1] - entry["data_offsets"][0]
        )
        if name in new:
            entry["dtype"] = dtype_names[new[name].dtype]
            entry["shape"] = list(new[name].shape)
        entry["data_offsets"] = [offset, offset + size]
        out_header[name] = entry
        offset += size
    blob = json.dumps(out_header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(struct.pack("<Q", len(blob)))
        fout.write(blob)
        for name in names:
            if name in new:
                fout.write(_tensor_bytes(new[name]))
                continue
            begin, end = header[name]["data_offsets"]
            fin.seek(start + begin)
            left = end - begin
            while left:
                chunk = fin.read(min(left, COPY_CHUNK))
                if not chunk:
                    raise ValueError(f"{src} is truncated: {name} runs past the end")
                fout.write(chunk)
                left -= len(chunk)


def link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``dst`` to ``src`` (symlinks resolved); copy the bytes where links fail
    (another filesystem, no permission). True when linked."""
    try:
        os.link(src.resolve(), dst)
    except OSError:
        shutil.copyfile(src, dst)
        return False
    return True


def _head_targets(model: SARM, edit: Head) -> dict[str, np.ndarray]:
    """``{tensor name: float32 values}`` the exported head must hold."""
    if edit.size != model.d_sae:
        raise ValueError(f"the edit has {edit.size} weights; the model's SAE has {model.d_sae}")
    edited = edit.applied()
    out = {HEAD_KEY: edited.weights}
    if edited.bias != 0.0:
        out[BIAS_KEY] = np.array([edited.bias], dtype=np.float32)
    return out


def write_released(
    model: SARM, edit: Head, manifest: Mapping[str, Any], directory: str | Path
) -> ReleasedExport:
    """A copy of the released checkpoint ``model`` was loaded from, with the edited head.

    Every top-level file of the source is carried over: safetensors shards that do not
    hold the head are hard-linked (copied byte for byte across filesystems), the
    shard holding ``score.weight`` is rewritten with every other tensor's bytes
    unchanged, and the rest (``config.json``, tokenizer files, the shard index) are
    copied. Head values that already match keep their stored bytes; if the stored
    dtype (bf16, say) cannot hold an edited weight exactly, ``score.weight`` is written
    as float32 so that the copy scores exactly as previewed. ``head_manifest.json``
    is written beside the weights. The copy is assembled in a temporary sibling
    directory and renamed into place. ``load_sarm(directory)`` loads it.
    """
    source = released_source(model)
    if source is None:
        raise ValueError(
            "this model was not loaded from a released (Llama-SARM) checkpoint directory; "
            "export a checkpoint in our layout instead"
        )
    target = check_output_dir(str(directory))
    targets = _head_targets(model, edit)
    shards = {f.name: f for f in safetensors_files(source)}
    headers = {name: read_safetensors_header(f) for name, f in shards.items()}
    holders = {k: [n for n, (_, h) in headers.items() if k in h] for k in (HEAD_KEY, BIAS_KEY)}
    if len(holders[HEAD_KEY]) != 1:
        raise ValueError(
            f"{source}: expected one shard holding {HEAD_KEY}, found {holders[HEAD_KEY]}"
        )
    if BIAS_KEY in targets and not holders[BIAS_KEY]:
        raise ValueError(
            f"the edited head has a bias ({targets[BIAS_KEY][0]:g}) but {source} has no "
            f"{BIAS_KEY}; export a checkpoint in our layout instead"
        )
    if holders[BIAS_KEY] and BIAS_KEY not in targets:
        targets[BIAS_KEY] = np.zeros(1, dtype=np.float32)
    edits: dict[str, dict[str, torch.Tensor]] = {}
    widened = False
    for key, values in targets.items():
        shard = holders[key][0]
        start, header = headers[shard]
        tensor, wide = _edited_tensor(shards[shard], start, key, header[key], values)
        edits.setdefault(shard, {})[key] = tensor
        widened |= wide and key == HEAD_KEY
    linked, copied, skipped = [], [], []
    with _staged(target) as tmp:
        for src in sorted(source.iterdir()):
            name = src.name
            if name.startswith(".") or name == HEAD_MANIFEST_FILE or not src.is_file():
                skipped.append(name)
            elif name in edits:
                start, header = headers[name]
                _rewrite_safetensors(src, tmp / name, start, header, edits[name])
            elif name.endswith(".safetensors"):
                (linked if link_or_copy(src, tmp / name) else copied).append(name)
            else:
                shutil.copyfile(src, tmp / name)
                copied.append(name)
        _fix_index_size(tmp / SHARD_INDEX_FILE, tmp, edits)
        _write_head_manifest(tmp, manifest)
        _usual_permissions(tmp, skip={tmp / n for n in linked})
    return ReleasedExport(
        path=target,
        rewritten=tuple(sorted(edits)),
        linked=tuple(linked),
        copied=tuple(copied),
        head_dtype=read_safetensors_header(target / holders[HEAD_KEY][0])[1][HEAD_KEY]["dtype"],
        widened=widened,
        skipped=tuple(skipped),
    )


def _fix_index_size(index: Path, root: Path, edits: Mapping[str, Any]) -> None:
    """Keep the shard index's ``metadata.total_size`` true when a shard grew (a widened head)."""
    if not index.is_file() or not edits:
        return
    doc = json.loads(index.read_text())
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or "total_size" not in meta:
        return
    total = 0
    for shard in sorted(set(doc.get("weight_map", {}).values())):
        _, header = read_safetensors_header(root / shard)
        total += sum(
            v["data_offsets"][1] - v["data_offsets"][0]
            for k, v in header.items()
            if k != "__metadata__"
        )
    if total != meta["total_size"]:
        meta["total_size"] = total
        index.write_text(json.dumps(doc, indent=2) + "\n")


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
    "ReleasedExport",
    "check_output_dir",
    "checkpoint_rewards",
    "checkpoint_zip",
    "edit_manifest",
    "edited_model",
    "head_files",
    "json_safe",
    "link_or_copy",
    "model_info",
    "read_manifest",
    "read_safetensors_header",
    "released_source",
    "write_checkpoint",
    "write_head",
    "write_released",
    "zip_files",
]
