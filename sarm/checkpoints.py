"""Loading and saving SARMs.

Two on-disk layouts are read:

- the released Llama-SARM layout: ``config.json`` (Llama fields plus SARM fields,
  top level or under ``sarm_param``) and safetensors (sharded or not) holding
  ``model.*``, ``sae.*`` and ``score.weight``. Only the first ``L`` layers are
  built and loaded; the ``auto_map`` remote code is never imported or run;
- our own layout, written by :func:`save_sarm`: ``sarm.json`` naming the backbone
  (embedded name, local directory, hub id, or an included ``backbone/`` folder),
  ``sae/`` in sae-lens's format plus ``sarm_sae.json``, and ``head.safetensors``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from huggingface_hub import snapshot_download
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, LlamaConfig, LlamaModel

from sarm.backbones import (
    DEFAULT_MAX_LENGTH,
    Backbone,
    _quiet_transformers,
    load_backbone,
    resolve_device,
    truncate_layers,
)
from sarm.cachedir import demo_model_dir, shipped_default_dir
from sarm.constants import (
    BACKBONE_DIR,
    DEFAULT_MODEL,
    DEMO_MODEL,
    HEAD_WEIGHTS_FILE,
    RELEASED_CONFIG_FILE,
    SAE_DIR,
    SARM_CONFIG_FILE,
)
from sarm.errors import CheckpointError, brief, unreadable
from sarm.head import Head
from sarm.model import SARM
from sarm.residual import ERROR_READOUT_FILE, ErrorReadout
from sarm.saes import SAEMeta, load_sae, sae_from_released, save_sae

logger = logging.getLogger(__name__)

FORMAT_NAME = "sarm-dashboard"
FORMAT_VERSION = 1
SARM_FIELDS = ("sae_latent_size", "sae_k", "sae_hidden_state_source_layer")
ACTIVATION_FIELDS = ("sarm_use_activation", "sarm_use_topk")
NON_LLAMA_FIELDS = (
    *SARM_FIELDS,
    *ACTIVATION_FIELDS,
    "sae_use_sequence_level",
    "sarm_param",
    "sarm_train_mode",
    "auto_map",
    "architectures",
)
# Llama fields a released config.json must give as positive integers (``required``)
# or may give (``optional``); transformers otherwise fails deep inside, or
# silently uses its own default (vocab_size 32000).
LLAMA_INT_FIELDS = {
    "required": ("vocab_size", "hidden_size", "intermediate_size", "num_attention_heads"),
    "optional": ("num_key_value_heads", "max_position_embeddings", "head_dim"),
}
# What transformers raises for a checkpoint it cannot build or load.
MODEL_LOAD_ERRORS = (
    SafetensorError,
    StrictDataclassError,
    OSError,
    RuntimeError,
    ValueError,
    TypeError,
    KeyError,
)


def load_sarm(
    path_or_name: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
) -> SARM:
    """Load a SARM from a directory (released or our layout), a name, or a hub id.

    ``"default"`` is the embedded default (shipped weights over the embedded backbone);
    ``"smollm2-demo"`` is the template-trained demo built by ``sarm build-demo``.
    ``device="cuda"`` with ``dtype=torch.bfloat16`` runs the backbone in bf16; the
    standardisation, SAE and head always run in float32.
    """
    resolve_device(device)
    name = str(path_or_name)
    if name == DEFAULT_MODEL:
        path = shipped_default_dir()
        if not (path / SARM_CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"the default SARM's weights are missing from this installation ({path}); "
                "reinstall, or rebuild them with `sarm build-default --from-scratch --out DIR`"
            )
        return _load_ours(path, device, dtype, max_length)
    if name == DEMO_MODEL:
        path = demo_model_dir()
        if not (path / SARM_CONFIG_FILE).is_file():
            raise FileNotFoundError(
                f"the demo SARM is not built yet ({path}); run `sarm build-demo` first"
            )
        return _load_ours(path, device, dtype, max_length)
    path = Path(name).expanduser()
    if path.is_dir():
        return _load_dir(path, device, dtype, max_length)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(f"no SARM checkpoint at {name!r} (not a directory)")
    return _load_dir(_download(name), device, dtype, max_length)


def _load_dir(path: Path, device, dtype, max_length) -> SARM:
    if (path / SARM_CONFIG_FILE).is_file():
        return _load_ours(path, device, dtype, max_length)
    if (path / RELEASED_CONFIG_FILE).is_file():
        return load_released(path, device, dtype, max_length)
    raise FileNotFoundError(f"{path} holds neither {SARM_CONFIG_FILE} nor {RELEASED_CONFIG_FILE}")


def _download(repo_id: str) -> Path:
    """Fetch a released checkpoint from the hub (data files only, never code)."""
    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", f"{SAE_DIR}/*", f"{BACKBONE_DIR}/*"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as exc:  # hub errors come in many classes
        raise FileNotFoundError(
            f"could not fetch {repo_id!r} from the Hugging Face Hub ({exc}); "
            "pass a local directory instead"
        ) from exc


# --------------------------------------------------------------------------- released layout


def sarm_params(config: dict, where: str = "config.json") -> dict:
    """The SARM fields of a released config (top level or under ``sarm_param``)."""
    params = {k: config[k] for k in (*SARM_FIELDS, *ACTIVATION_FIELDS) if k in config}
    nested = config.get("sarm_param") or {}
    if not isinstance(nested, dict):
        raise ValueError(f"{where}: sarm_param must be an object")
    params.update({k: v for k, v in nested.items() if k in (*SARM_FIELDS, *ACTIVATION_FIELDS)})
    missing = [k for k in SARM_FIELDS if k not in params]
    if missing:
        raise ValueError(
            f"{where} lacks the SARM fields {', '.join(missing)} (top level or under "
            "sarm_param); is this a SARM checkpoint?"
        )
    for k in SARM_FIELDS:
        if isinstance(params[k], bool) or not isinstance(params[k], int) or params[k] < 1:
            raise ValueError(f"{where}: {k} must be a positive integer, got {params[k]!r}")
    params["use_activation"] = _activation_flag(params, where)
    return params


def _activation_flag(params: dict, where: str) -> bool:
    for key in ACTIVATION_FIELDS:
        if key in params:
            return bool(params[key])
    warnings.warn(f"{where} has no sarm_use_activation; assuming TopK is applied", stacklevel=3)
    return True


def load_released(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_length: int | None = None,
) -> SARM:
    """Load a checkpoint in the released Llama-SARM layout without running its code."""
    path = Path(path)
    config = _read_json(path / RELEASED_CONFIG_FILE)
    params = sarm_params(config, str(path / RELEASED_CONFIG_FILE))
    layer = params["sae_hidden_state_source_layer"]
    files = safetensors_files(path)
    keys = _keys_by_file(files)
    _check_layers_present(keys, layer, path)
    _check_llama_fields(config, keys, path / RELEASED_CONFIG_FILE)
    backbone = _released_backbone(path, config, layer, device, dtype, max_length)
    check_finite_backbone(backbone, path / "model.safetensors")
    tensors = _read_tensors(keys, lambda k: k.startswith(("sae.", "score.")))
    sae = sae_from_released(tensors, params["sae_k"], device="cpu")
    if sae.cfg.d_sae != params["sae_latent_size"]:
        raise ValueError(
            f"{path}: sae.encoder.weight has {sae.cfg.d_sae} latents but config says "
            f"sae_latent_size={params['sae_latent_size']}"
        )
    head = Head.from_tensors(tensors, where=str(path))
    meta = SAEMeta(
        k=params["sae_k"],
        use_activation=params["use_activation"],
        mode="last" if config.get("sae_use_sequence_level", True) else "tokens",
        backbone=str(path),
        layer=layer,
    )
    return SARM(backbone, sae, head, meta, source={"layout": "released", "path": str(path)})


def safetensors_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors files (from the shard index when there is one)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index).get("weight_map", {}).values()))
        files = [path / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"shards listed in {index} are missing: {', '.join(missing)}")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {path}")
    return files


def _keys_by_file(files: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                out.update({k: f for k in fh.keys()})  # noqa: SIM118 (safe_open has no __iter__)
        except SafetensorError as exc:
            raise unreadable(f, exc) from exc
    return out


def _read_tensors(keys: dict[str, Path], want) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, f in keys.items():
        if want(key):
            try:
                with safe_open(str(f), framework="pt") as fh:
                    out[key] = fh.get_tensor(key)
            except SafetensorError as exc:
                raise unreadable(f, exc) from exc
    return out


def _tensor_shape(keys: dict[str, Path], key: str) -> tuple[int, ...]:
    try:
        with safe_open(str(keys[key]), framework="pt") as fh:
            return tuple(fh.get_slice(key).get_shape())
    except SafetensorError as exc:
        raise unreadable(keys[key], exc) from exc


def _check_llama_fields(config: dict, keys: dict[str, Path], where: Path) -> None:
    """The Llama sizes in ``config.json`` are integers that fit the stored embedding."""
    for group, names in LLAMA_INT_FIELDS.items():
        for name in names:
            if name not in config and group == "optional":
                continue
            value = config.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                given = "is missing" if name not in config else f"is {value!r}"
                raise CheckpointError(
                    f"{where}: {name} {given}; it must be a positive integer "
                    "(the Llama size the weights were saved with)"
                )
    stored = _tensor_shape(keys, "model.embed_tokens.weight")
    expected = (config["vocab_size"], config["hidden_size"])
    if stored != expected:
        raise CheckpointError(
            f"{where}: vocab_size={expected[0]} and hidden_size={expected[1]} do not match "
            f"model.embed_tokens.weight of shape {list(stored)}; fix config.json"
        )


def _check_layers_present(keys: dict[str, Path], layer: int, path: Path) -> None:
    present = {int(k.split(".")[2]) for k in keys if k.startswith("model.layers.")}
    n = max(present) + 1 if present else 0
    if layer > n:
        raise ValueError(
            f"{path}: sae_hidden_state_source_layer={layer} but the weights hold only "
            f"{n} decoder layers"
        )
    if "model.embed_tokens.weight" not in keys:
        raise ValueError(f"{path}: weights lack model.embed_tokens.weight")


def _released_backbone(path, config, layer, device, dtype, max_length) -> Backbone:
    fields = {k: v for k, v in config.items() if k not in NON_LLAMA_FIELDS}
    fields["num_hidden_layers"] = layer
    dev = resolve_device(device)
    try:
        llama_config = LlamaConfig(**fields)
        with _quiet_transformers():
            model = LlamaModel.from_pretrained(
                str(path),
                config=llama_config,
                dtype=dtype or torch.float32,
                trust_remote_code=False,
            )
    except MODEL_LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{path}: the backbone cannot be built from {RELEASED_CONFIG_FILE} and the "
            f"weights ({brief(exc)}); check that config.json matches the safetensors"
        ) from exc
    try:
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except MODEL_LOAD_ERRORS as exc:
        raise CheckpointError(
            f"{path}: the tokenizer cannot be loaded ({brief(exc)}); the checkpoint needs "
            "tokenizer.json or tokenizer.model and tokenizer_config.json"
        ) from exc
    model = truncate_layers(model, layer).to(dev)
    return Backbone(model, tok, layer, str(path), max_length or DEFAULT_MAX_LENGTH)


def check_finite_backbone(backbone: Backbone, where: object) -> None:
    """CheckpointError naming the first backbone weight that holds NaN or inf.

    Such weights make every reward NaN; the SAE and the head check their own.
    """
    for name, param in backbone.model.named_parameters():
        if not torch.isfinite(param).all():
            raise CheckpointError(
                f"{where}: the backbone weight {name} holds NaN or inf; the checkpoint is "
                "corrupt: download or save it again"
            )


# --------------------------------------------------------------------------- our layout


def save_sarm(sarm: SARM, directory: str | Path, include_backbone: bool = False) -> Path:
    """Write ``sarm.json`` + ``sae/`` + ``head.safetensors`` (+ ``backbone/``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    backbone_ref = _backbone_reference(sarm.backbone, directory, include_backbone)
    save_sae(sarm.sae, directory / SAE_DIR, sarm.sae_meta)
    sarm.head.save(directory / HEAD_WEIGHTS_FILE, {"head_hash": sarm.head.hash()})
    if sarm.error_readout is not None:
        sarm.error_readout.save(directory / ERROR_READOUT_FILE)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "backbone": {
            "name": backbone_ref,
            "layer": sarm.layer,
            "max_length": sarm.backbone.max_length,
        },
        "sae": SAE_DIR,
        "head": HEAD_WEIGHTS_FILE,
        **({"error_readout": ERROR_READOUT_FILE} if sarm.error_readout is not None else {}),
        "fingerprint": sarm.fingerprint(),
    }
    tmp = directory / (SARM_CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    tmp.replace(directory / SARM_CONFIG_FILE)
    return directory


def _backbone_reference(backbone: Backbone, directory: Path, include: bool) -> str:
    if include:
        target = directory / BACKBONE_DIR
        backbone.model.save_pretrained(str(target))
        backbone.tokenizer.save_pretrained(str(target))
        return BACKBONE_DIR
    local = Path(backbone.name)
    return str(local.resolve()) if local.exists() else backbone.name


def _load_ours(path: Path, device, dtype, max_length) -> SARM:
    manifest = _read_manifest(path / SARM_CONFIG_FILE)
    bb = manifest["backbone"]
    included = path / BACKBONE_DIR  # what save_sarm(include_backbone=True) writes
    source = str(included) if bb["name"] == BACKBONE_DIR and included.is_dir() else bb["name"]
    backbone = load_backbone(
        source, bb["layer"], device, dtype, max_length or bb.get("max_length", DEFAULT_MAX_LENGTH)
    )
    check_finite_backbone(backbone, source)
    sae, meta = load_sae(path / manifest.get("sae", SAE_DIR))
    head = Head.load(path / manifest.get("head", HEAD_WEIGHTS_FILE))
    readout = manifest.get("error_readout")
    readout = ErrorReadout.load(path / readout) if readout else None
    source = {"layout": "sarm", "path": str(path)}
    return SARM(backbone, sae, head, meta, source=source, error_readout=readout)


def _read_manifest(where: Path) -> dict:
    """``sarm.json``, checked field by field (a bad field names itself, never a KeyError)."""
    manifest = _read_json(where)
    if manifest.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{where} is not a {FORMAT_NAME} checkpoint (format field)")
    version = manifest.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"{where}: version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where} was written by a newer version (format {version}); upgrade sarm"
        )
    bb = manifest.get("backbone")
    if not isinstance(bb, dict):
        given = "is missing" if bb is None else f"is a {type(bb).__name__}"
        raise CheckpointError(
            f'{where}: the field "backbone" {given}; it must be an object '
            '{"name": ..., "layer": ...} as save_sarm writes it'
        )
    if not isinstance(bb.get("name"), str) or not bb["name"].strip():
        raise CheckpointError(f"{where}: backbone.name must be a backbone name or directory")
    for key in ("layer", "max_length"):
        value = bb.get(key, 1 if key == "max_length" else None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CheckpointError(
                f"{where}: backbone.{key} must be a positive integer, got {value!r}"
            )
    for key in ("sae", "head", "error_readout"):
        if not isinstance(manifest.get(key, ""), str):
            raise CheckpointError(f"{where}: {key} must be a path relative to the checkpoint")
    return manifest


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise CheckpointError(f"{path} is nested too deeply to be a config file") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


__all__ = ["load_released", "load_sarm", "safetensors_files", "save_sarm"]
