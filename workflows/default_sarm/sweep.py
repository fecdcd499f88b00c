"""Step 2 of the default's build: choose the layer, SAE level, dictionary and k on dev.

Stage 0: the dense baseline (BT on ``u_T``), its weight decay tuned on dev, at
every captured layer. Stage 1: one SAE of the plan's layer shape at the
``sae_layers`` layers where that probe is best. Stage 2: the plan's grid (level,
dictionary size, k) at the stage-1 layer whose SAE head is best.

Every SAE candidate trains a TopK SAE (sae-lens) on the train split's cached
activations (sequence level: ``u_T`` of every train response; token level: the
sampled response tokens), encodes every response's ``u_T`` with it, trains a
Bradley-Terry head on the train pairs (each category weighs the same) and is
judged on the dev split by:

- ``dev_macro``: pairwise accuracy averaged over categories;
- SAE quality on dev ``u_T``: explained variance and the dead fraction;
- ``purity_top20``: for the 20 features of largest ``|w|``, the share of each
  one's 20 top train+dev responses that come from its most common source.

Results are appended to ``sweep.jsonl`` one candidate at a time, so a rerun
skips what is done.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from sarm.configs import HeadTrainConfig, SAETrainConfig
from sarm.evaluate import PairIndex, accuracy_per_label, macro_accuracy
from sarm.saes import sarm_encode
from sarm.train.capture import LayerCapture
from sarm.train.head import train_bt_head, train_dense_baseline
from sarm.train.metrics import sae_metrics
from sarm.train.pairs import balanced_pair_weights
from sarm.train.sae import TrainedSAE, train_sae
from sarm.train.selection import feature_purity, mean_purity
from workflows.default_sarm.capture import cached_capture
from workflows.default_sarm.data import SplitData, load_split
from workflows.default_sarm.plan import BuildPlan

SWEEP_FILE = "sweep.jsonl"
DENSE_DECAYS = (0.0, 1e-3, 1e-2, 1e-1)
N_TOP_FEATURES = 20


@dataclass(frozen=True)
class Candidate:
    """One SAE to try: where it reads, at what level, how big, how sparse, how long."""

    layer: int
    level: str  # "sequence" (u_T per response) or "token" (sampled response tokens)
    d_sae: int
    k: int
    n_samples: int  # training samples the SAE sees (epochs x rows)
    lr: float = 1e-3

    @property
    def name(self) -> str:
        return f"L{self.layer}-{self.level}-m{self.d_sae}-k{self.k}-n{self.n_samples}"


@dataclass
class SweepData:
    """The train and dev splits with their captures and pair indexes."""

    train: SplitData
    dev: SplitData
    train_cap: LayerCapture
    dev_cap: LayerCapture
    train_pairs: PairIndex
    dev_pairs: PairIndex
    train_weights: np.ndarray  # per train pair: categories weigh the same
    dev_labels: list[str]  # category per dev group
    row_sources: list[str]  # source per train row, then per dev row
    seed: int

    @classmethod
    def load(cls, plan: BuildPlan) -> SweepData:
        train, dev = load_split("train", limit=plan.limit), load_split("dev", limit=plan.limit)
        train_pairs, dev_pairs = train.pair_index(), dev.pair_index()
        train_cats = [_meta(train.groups[g], "category") for g in train_pairs.group]
        return cls(
            train,
            dev,
            cached_capture(plan, "train"),
            cached_capture(plan, "dev"),
            train_pairs,
            dev_pairs,
            balanced_pair_weights(train_cats),
            [_meta(g, "category") for g in dev.groups],
            _row_labels(train, "source") + _row_labels(dev, "source"),
            plan.seed,
        )


def _meta(group, key: str) -> str:
    return str(group.meta.get(key) or "unknown")


def _row_labels(split: SplitData, key: str) -> list[str]:
    """The ``key`` of the group each distinct conversation first came from."""
    labels = ["unknown"] * len(split.conversations)
    number = 0
    for group in split.groups:
        for _ in group.responses():
            row = int(split.row_of_response[number])
            if labels[row] == "unknown":
                labels[row] = _meta(group, key)
            number += 1
    return labels


# --------------------------------------------------------------------------- heads


def head_config(weight_decay: float = 0.0, l1: float = 0.0, seed: int = 0) -> HeadTrainConfig:
    """BT head training as the build uses it: FISTA, early stopping on 10% of train pairs."""
    return HeadTrainConfig(
        weight_decay=weight_decay, l1=l1, seed=seed, max_epochs=2000, patience=50
    )


def fit_head(
    data: SweepData,
    latents,
    n_features: int | None,
    cfg: HeadTrainConfig,
    pairs: np.ndarray | None = None,
):
    """A BT head on train rows: ``latents`` is ``(indices, values)`` or a dense matrix.

    ``pairs`` (positions into the train pairs) trains on a subset.
    """
    kwargs = {"n_features": n_features} if n_features else {}
    index = data.train_pairs
    take = np.arange(index.n_pairs) if pairs is None else pairs
    return train_bt_head(
        latents,
        index.chosen_row[take],
        index.rejected_row[take],
        cfg,
        groups=index.group[take],
        pair_weights=data.train_weights[take],
        **kwargs,
    )


def prompt_subsets(data: SweepData, fractions, seed: int) -> dict[float, np.ndarray]:
    """Train pair positions for each fraction of the train groups (seeded, nested)."""
    n_groups = len(data.train_pairs.group_ids)
    order = np.random.default_rng(seed).permutation(n_groups)
    out = {}
    for fraction in fractions:
        keep = np.zeros(n_groups, bool)
        keep[order[: max(1, round(fraction * n_groups))]] = True
        out[fraction] = np.flatnonzero(keep[data.train_pairs.group])
    return out


def dev_scores(data: SweepData, rewards: np.ndarray) -> dict:
    return {
        "dev_macro": round(macro_accuracy(rewards, data.dev_pairs, data.dev_labels), 4),
        "dev_per_category": {
            k: round(v[0], 4)
            for k, v in accuracy_per_label(rewards, data.dev_pairs, data.dev_labels).items()
        },
    }


def dense_baseline(data: SweepData, layer: int) -> dict:
    """The dense baseline at ``layer``, its weight decay chosen on dev."""
    u_train = data.train_cap.final[layer].float()
    u_dev = data.dev_cap.final[layer].float()
    best: dict = {}
    for decay in DENSE_DECAYS:
        result = train_dense_baseline(
            u_train,
            data.train_pairs.chosen_row,
            data.train_pairs.rejected_row,
            head_config(weight_decay=decay, seed=data.seed),
            groups=data.train_pairs.group,
            pair_weights=data.train_weights,
        )
        scores = dev_scores(data, (u_dev @ result.weight).numpy())
        row = {"weight_decay": decay, **scores}
        if not best or row["dev_macro"] > best["dev_macro"]:
            best = row
    return {"kind": "dense", "layer": layer, **best}


# --------------------------------------------------------------------------- SAEs


def sae_training_rows(data: SweepData, c: Candidate) -> torch.Tensor:
    """What the candidate's SAE trains on (float32), from the train split only."""
    if c.level == "sequence":
        return data.train_cap.final[c.layer].float()
    tokens = data.train_cap.tokens[c.layer]
    return tokens.float()


def train_candidate_sae(
    data: SweepData, c: Candidate, batch_size: int, progress: bool = False
) -> TrainedSAE:
    x = sae_training_rows(data, c)
    cfg = SAETrainConfig(
        d_sae=c.d_sae,
        k=c.k,
        mode="last" if c.level == "sequence" else "tokens",
        total_samples=c.n_samples,
        batch_size=min(batch_size, x.shape[0] // 2),
        lr=c.lr,
        seed=data.seed,
        eval_fraction=0.02,
        max_eval_samples=2000,
    )
    return train_sae(x, x.shape[1], cfg, progress=progress)


def encode_rows(trained: TrainedSAE, u: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values, indices)`` of every row of ``u`` (float32), in chunks."""
    vals, idxs = [], []
    with torch.inference_mode():
        for chunk in u.float().split(4096):
            v, i = sarm_encode(trained.sae, chunk, k)
            vals.append(v)
            idxs.append(i)
    return torch.cat(vals), torch.cat(idxs)


def evaluate_candidate(
    data: SweepData, c: Candidate, batch_size: int, progress: bool = False
) -> tuple[dict, dict]:
    """Train the candidate's SAE and head; return the sweep row and the artefacts."""
    start = time.perf_counter()
    trained = train_candidate_sae(data, c, batch_size, progress)
    u_train = data.train_cap.final[c.layer].float()
    u_dev = data.dev_cap.final[c.layer].float()
    v_tr, i_tr = encode_rows(trained, u_train, c.k)
    v_dev, i_dev = encode_rows(trained, u_dev, c.k)
    head = fit_head(data, (i_tr, v_tr), c.d_sae, head_config(seed=data.seed))
    w = head.weight
    dev_r = (v_dev * w[i_dev]).sum(-1).numpy()
    top = torch.argsort(w.abs(), descending=True)[:N_TOP_FEATURES].tolist()
    purity = feature_purity(
        torch.cat([v_tr, v_dev]), torch.cat([i_tr, i_dev]), top, data.row_sources
    )
    on_dev_u = sae_metrics(trained.sae, u_dev, c.k)
    row = {
        "kind": "sae",
        **asdict(c),
        "name": c.name,
        **dev_scores(data, dev_r),
        "purity_top20": round(mean_purity(purity), 4),
        "sae_eval": {k: round(float(v), 4) for k, v in trained.metrics.items()},
        "dev_u_T": {
            "explained_variance": round(on_dev_u["explained_variance"], 4),
            "dead_fraction": round(on_dev_u["dead_fraction"], 4),
        },
        "head_nonzero": int((w != 0).sum()),
        "seconds": round(time.perf_counter() - start, 1),
    }
    return row, {"sae": trained, "head": head}


# --------------------------------------------------------------------------- stages


def probe_layers(plan: BuildPlan, rows: Iterable[dict]) -> list[int]:
    """The ``plan.sae_layers`` layers where the tuned dense probe is best on dev."""
    dense = {r["layer"]: r["dev_macro"] for r in rows if r["kind"] == "dense"}
    missing = [layer for layer in plan.layers if layer not in dense]
    if missing:
        raise ValueError(f"no dense probe yet at layers {missing}; run the sweep")
    ranked = sorted(plan.layers, key=lambda layer: (-dense[layer], layer))
    return ranked[: plan.sae_layers]


def layer_stage(plan: BuildPlan, layers: Iterable[int]) -> list[Candidate]:
    """Stage 1: one SAE of the plan's layer shape at each of ``layers``."""
    level, d_sae, k, n = plan.layer_shape
    return [Candidate(layer, level, d_sae, k, n) for layer in layers]


def grid_stage(plan: BuildPlan, layer: int) -> list[Candidate]:
    """Stage 2 at the chosen layer: level x dictionary size x k."""
    return [Candidate(layer, level, m, k, n) for level, m, k, n in plan.grid]


def read_sweep(plan: BuildPlan) -> list[dict]:
    path = plan.root() / SWEEP_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(plan: BuildPlan, row: dict) -> None:
    with (plan.root() / SWEEP_FILE).open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def best_layer(plan: BuildPlan, rows: list[dict]) -> int:
    """The layer whose stage-1 SAE head has the best dev macro accuracy."""
    stage1 = {c.name for c in layer_stage(plan, probe_layers(plan, rows))}
    rows = [r for r in rows if r.get("name") in stage1]
    if not rows:
        raise ValueError("run the layer stage first")
    return max(rows, key=lambda r: r["dev_macro"])["layer"]


def run_sweep(plan: BuildPlan, progress: bool = True) -> list[dict]:
    """Both stages (skipping candidates already in ``sweep.jsonl``); returns every row."""
    torch.manual_seed(plan.seed)
    data = SweepData.load(plan)
    done = {r["name"] for r in read_sweep(plan)}
    for layer in plan.layers:
        if f"dense-L{layer}" not in done:
            _record(plan, {"name": f"dense-L{layer}", **dense_baseline(data, layer)})
    for c in layer_stage(plan, probe_layers(plan, read_sweep(plan))):
        if c.name not in done:
            _record(plan, evaluate_candidate(data, c, plan.sae_batch_size, progress)[0])
    for c in grid_stage(plan, best_layer(plan, read_sweep(plan))):
        if c.name not in {r["name"] for r in read_sweep(plan)}:
            _record(plan, evaluate_candidate(data, c, plan.sae_batch_size, progress)[0])
    return read_sweep(plan)


def _record(plan: BuildPlan, row: dict) -> None:
    _append(plan, row)
    shown = {k: row[k] for k in ("name", "dev_macro", "purity_top20", "seconds") if k in row}
    print(f"[sweep] {json.dumps(shown)}", file=sys.stderr, flush=True)
