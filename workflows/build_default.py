"""``sarm build-demo``: the embedded default SARM, built from nothing, reproducibly.

Steps (each cached under :func:`sarm.cachedir.demo_dir`):

1. ``data``: the seeded demo preference data, written as ``data/{train,test}.jsonl``;
2. ``activations``: ONE backbone pass over every response (SmolLM2-135M, first
   15 layers), keeping the standardised ``u_T`` at the pooled end-of-turn token;
3. ``sae``: a TopK SAE (sae-lens) trained at sequence level on the train split's
   ``u_T``, as the released SARM's SAE was (token-level SAEs were tried: they
   spend their latents on ordinary tokens, and a head over them reached 0.83
   held-out accuracy against 0.87 for sequence-level ones);
4. ``head``: a Bradley-Terry head on the train split's pooled latents, and the
   dense baseline (a linear head on ``u_T``) on the same pairs;
5. ``evaluate``: both heads on the held-out test split;
6. ``model`` and ``store``: the SARM saved in our layout (``load_sarm("smollm2-demo")``)
   and the demo data indexed into the demo feature store, reusing the pooled
   latents of step 2 instead of running the backbone again.

The test split is never seen by the SAE or the head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from feature_store import CachedLatents, FeatureStore, ingest
from sarm import cachedir as paths
from sarm.backbones import load_backbone
from sarm.checkpoints import save_sarm
from sarm.constants import (
    BASELINE_HEAD_FILE,
    DEFAULT_BUILD_MANIFEST,
    DEFAULT_LAYER,
    EMBEDDED_BACKBONE,
    SARM_CONFIG_FILE,
)
from sarm.data import save_jsonl
from sarm.datasets.demo import generate_demo_data
from sarm.evaluate import PairIndex, evaluate_arrays
from sarm.head import Head
from sarm.latents import PooledLatents, SparseLatents
from sarm.model import SARM
from sarm.saes import SAEMeta, sarm_encode, standardize
from sarm.scoring import dense_rewards, response_rows
from sarm.train.head import HeadTrainConfig, train_bt_head, train_dense_baseline
from sarm.train.sae import SAETrainConfig, train_sae

logger = logging.getLogger(__name__)
MANIFEST = DEFAULT_BUILD_MANIFEST
Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class DemoConfig:
    """Everything that determines the demo's artefacts (hashed into the manifest)."""

    seed: int = 0
    n_pairs: int = 960
    layer: int = DEFAULT_LAYER
    d_sae: int = 2048
    k: int = 32
    sae_epochs: float = 200.0
    sae_lr: float = 1e-3
    forward_batch_size: int = 16
    head_l1: float = 0.0
    max_length: int = 512

    def __post_init__(self) -> None:
        for name in ("n_pairs", "d_sae", "k", "forward_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DemoConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.k > self.d_sae:
            raise ValueError(f"DemoConfig.k={self.k} exceeds d_sae={self.d_sae}")

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class DemoReport:
    """What ``build_demo`` produced and measured."""

    root: Path
    model_dir: Path
    store_path: Path
    metrics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    cached: bool = False

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "model_dir": str(self.model_dir),
            "store_path": str(self.store_path),
            "metrics": self.metrics,
            "seconds": self.seconds,
            "cached": self.cached,
        }


# --------------------------------------------------------------------------- manifest


def read_manifest(root: Path | None = None) -> dict | None:
    path = (root or paths.demo_dir()) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_built(config: DemoConfig | None = None) -> bool:
    """True when the demo model and store exist for ``config`` (default settings)."""
    manifest = read_manifest()
    cfg = config or DemoConfig()
    return bool(
        manifest
        and manifest.get("config_key") == cfg.key()
        and manifest.get("complete")
        and (paths.demo_model_dir() / SARM_CONFIG_FILE).is_file()
        and paths.demo_store_path().is_file()
    )


def _write_manifest(root: Path, payload: dict) -> None:
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(root / MANIFEST)


# --------------------------------------------------------------------------- step 2: one pass


@dataclass
class DemoActivations:
    """Outputs of the single backbone pass over every demo response."""

    pooled_u: Float[torch.Tensor, "n d"]  # standardised u_T of every response
    n_tokens: Int[torch.Tensor, " n"]
    truncated: Bool[torch.Tensor, " n"]

    def save(self, path: Path) -> None:
        tensors = {k: v.contiguous() for k, v in asdict(self).items()}
        tensors["truncated"] = tensors["truncated"].to(torch.uint8)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> DemoActivations:
        t = load_file(str(path))
        return cls(t["pooled_u"], t["n_tokens"], t["truncated"].bool())


def collect_activations(
    backbone, conversations: Sequence, batch_size: int, progress: bool = True
) -> DemoActivations:
    """Pooled ``u_T`` of every conversation, batched by length (one forward per batch)."""
    enc = backbone.encoder
    rows = [enc.token_ids(c) for c in conversations]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    pooled = torch.zeros(len(rows), backbone.d_model)
    bar = tqdm(total=len(rows), desc="backbone pass", unit="resp", disable=not progress)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        batch = enc.pad([rows[i] for i in idx])
        h = backbone.hidden_states(batch)
        last = h[torch.arange(len(idx)), batch.last_index.to(h.device)]
        pooled[idx] = standardize(last).cpu()
        bar.update(len(idx))
    bar.close()
    return DemoActivations(
        pooled_u=pooled,
        n_tokens=torch.tensor([len(r[0]) for r in rows]),
        truncated=torch.tensor([r[1] > 0 for r in rows]),
    )


# --------------------------------------------------------------------------- the pipeline


class DemoBuilder:
    """Runs the steps in order, timing each, reusing cached intermediate files."""

    def __init__(
        self, config: DemoConfig, root: Path, progress: bool = True, on_step: Progress | None = None
    ):
        self.cfg = config
        self.root = root
        self.progress = progress
        self.on_step = on_step
        self.seconds: dict[str, float] = {}
        self.metrics: dict = {}

    def _step(self, name: str, fraction: float, fn):
        if self.on_step:
            self.on_step(name, fraction)
        logger.info("demo: %s", name)
        start = time.perf_counter()
        out = fn()
        self.seconds[name] = round(time.perf_counter() - start, 2)
        return out

    def run(self) -> DemoReport:
        self.root.mkdir(parents=True, exist_ok=True)
        data = self._step("data", 0.0, self._data)
        backbone = self._step("backbone", 0.05, self._backbone)
        groups = data.train + data.test
        self.n_train_responses = sum(len(g.responses()) for g in data.train)
        acts = self._step("activations", 0.1, lambda: self._activations(backbone, data))
        sae = self._step("sae", 0.45, lambda: self._train_sae(acts, backbone.d_model))
        model = self._step("head", 0.75, lambda: self._train_heads(backbone, sae, data, acts))
        self._step("save model", 0.85, lambda: self._save_model(model))
        self._step("store", 0.9, lambda: self._index(model, groups))
        report = DemoReport(
            self.root,
            paths.demo_model_dir(),
            paths.demo_store_path(),
            self.metrics,
            self.seconds,
        )
        manifest = {"config": asdict(self.cfg), "config_key": self.cfg.key(), "complete": True}
        _write_manifest(self.root, {**manifest, "metrics": self.metrics, "seconds": self.seconds})
        if self.on_step:
            self.on_step("done", 1.0)
        return report

    # -- steps -----------------------------------------------------------------

    def _backbone(self):
        return load_backbone(EMBEDDED_BACKBONE, self.cfg.layer, max_length=self.cfg.max_length)

    def _data(self):
        data = generate_demo_data(seed=self.cfg.seed, n_pairs=self.cfg.n_pairs)
        save_jsonl(data.train, self.root / "data" / "train.jsonl")
        save_jsonl(data.test, self.root / "data" / "test.jsonl")
        return data

    def _activations(self, backbone, data) -> DemoActivations:
        path = self.root / f"activations-{self.cfg.key()}.safetensors"
        if path.is_file():
            return DemoActivations.load(path)
        _, convs = response_rows(data.train + data.test)
        acts = collect_activations(backbone, convs, self.cfg.forward_batch_size, self.progress)
        for old in self.root.glob("activations-*.safetensors"):
            old.unlink()
        acts.save(path)
        return acts

    def _train_sae(self, acts: DemoActivations, d_in: int):
        x = acts.pooled_u[: self.n_train_responses]  # the train split only
        cfg = SAETrainConfig(
            d_sae=self.cfg.d_sae,
            k=self.cfg.k,
            mode="last",
            n_epochs=self.cfg.sae_epochs,
            lr=self.cfg.sae_lr,
            seed=self.cfg.seed,
        )
        trained = train_sae(x, d_in, cfg, progress=self.progress)
        self.metrics["sae"] = {k: round(float(v), 4) for k, v in trained.metrics.items()}
        self.metrics["sae"]["n_train_samples"] = int(x.shape[0])
        return trained

    def _train_heads(self, backbone, trained, data, acts: DemoActivations):
        meta = SAEMeta(k=self.cfg.k, mode="last", backbone=EMBEDDED_BACKBONE, layer=self.cfg.layer)
        model = SARM(backbone, trained.sae, Head(torch.zeros(self.cfg.d_sae)), meta)
        with torch.inference_mode():
            values, indices = sarm_encode(model.sae, acts.pooled_u, self.cfg.k)
        n = self.n_train_responses
        train_idx, test_idx = _pair_indices(data.train), _pair_indices(data.test, offset=n)
        cfg = HeadTrainConfig(l1=self.cfg.head_l1, seed=self.cfg.seed)
        sarm_head = train_bt_head(
            (indices[:n], values[:n]),
            train_idx.chosen_row,
            train_idx.rejected_row,
            cfg,
            n_features=self.cfg.d_sae,
            groups=train_idx.group,
        )
        dense = train_dense_baseline(
            acts.pooled_u[:n],
            train_idx.chosen_row,
            train_idx.rejected_row,
            cfg,
            groups=train_idx.group,
        )
        model.set_head(sarm_head.to_head())
        latents = SparseLatents.from_topk(values.float().numpy(), indices.numpy(), model.d_sae)
        self.pooled = PooledLatents(
            latents, model.head.rewards(latents), acts.n_tokens.numpy(), acts.truncated.numpy()
        )
        self.dense_head = dense.to_head()
        self.metrics["head"] = sarm_head.summary()
        self.metrics["baseline"] = dense.summary()
        self.metrics["test"] = _test_metrics(self.pooled, self.dense_head, acts, test_idx)
        return model

    def _save_model(self, model) -> None:
        target = paths.demo_model_dir()
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_sarm(model, tmp)
        self.dense_head.save(tmp / BASELINE_HEAD_FILE, {"kind": "dense baseline on u_T"})
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)

    def _index(self, model: SARM, groups) -> None:
        _, convs = response_rows(groups)
        memo = CachedLatents(
            model.fingerprint(), model.head, convs, self.pooled, model.error_feature
        )
        store_path = paths.demo_store_path()
        tmp = store_path.with_name(store_path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        with FeatureStore.open(tmp) as store:
            report = ingest(store, memo, groups, source="demo", progress=self.progress)
        self.metrics["store"] = {
            "n_examples": report.n_examples,
            "mb_per_1000_examples": round(report.bytes_per_1000_examples / 1e6, 3),
        }
        store_path.unlink(missing_ok=True)
        tmp.replace(store_path)


def _pair_indices(groups, offset: int = 0) -> PairIndex:
    """PairIndex over rows numbered in ``response_rows`` order, starting at ``offset``."""
    keys, _ = response_rows(groups)
    return PairIndex.from_groups(groups, {k: offset + i for i, k in enumerate(keys)})


def _test_metrics(
    pooled: PooledLatents, dense: Head, acts: DemoActivations, test_idx: PairIndex
) -> dict:
    """Held-out accuracy of the SARM head and the dense baseline, overall and per category."""
    base_r = dense_rewards(dense, acts.pooled_u.numpy())
    out = {}
    for name, rewards in (("sarm", pooled.rewards), ("baseline", base_r)):
        rep = evaluate_arrays(rewards, test_idx).to_dict()
        out[name] = {
            "pairwise_accuracy": rep["pairwise_accuracy"],
            "n_pairs": rep["n_pairs"],
            "per_subset": {k: v["accuracy"] for k, v in rep["per_subset"].items()},
        }
    return out


def build_demo(
    config: DemoConfig | None = None,
    force: bool = False,
    progress: bool = True,
    on_step: Progress | None = None,
) -> DemoReport:
    """Build (or reuse) the demo SARM and its store; seconds when already built."""
    cfg = config or DemoConfig()
    root = paths.demo_dir()
    if not force and is_built(cfg):
        manifest = read_manifest() or {}
        return DemoReport(
            root,
            paths.demo_model_dir(),
            paths.demo_store_path(),
            manifest.get("metrics", {}),
            manifest.get("seconds", {}),
            cached=True,
        )
    if force:
        for old in root.glob("activations-*.safetensors"):
            old.unlink()
    return DemoBuilder(cfg, root, progress, on_step).run()
