"""Where the SAE head loses to the dense probe: ``python -m workflows.default_sarm.ablation``.

Everything is computed from the build's captures (no backbone pass) and
judged where the loss showed, on the public held-out sets of ``data/heldout``
(their mean pairwise accuracy, ``heldout_mean``), beside dev. Each row changes
one thing from the shipped default:

- the SAE's reconstruction at the scored token: FVU and dead latents per set;
- dictionary width and k, sequence- vs token-level training, the layer: an SAE
  retrained per row (``SHAPES``, the sweep's sample budget);
- the head's regularisation (the build's grid) on the shipped SAE;
- the train mix: the same heads without the TruthfulQA pairs (half of train);
- the SAE error term: the joint head and the dense probe decomposed through
  the SAE (:mod:`workflows.default_sarm.error_head`).

Writes ``ablation.json`` beside the default's manifest and prints the
markdown table that ``docs/default_model.md`` quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sarm.datasets.heldout import HELDOUT_DIR, heldout_sets
from sarm.head import Head
from sarm.train.head import train_error_head
from workflows.default_sarm.build import HEAD_GRID, assets_dir
from workflows.default_sarm.capture import cached_capture
from workflows.default_sarm.data import load_split
from workflows.default_sarm.error_head import Encoded, shipped_sae
from workflows.default_sarm.plan import FULL, BuildPlan
from workflows.default_sarm.report import split_report
from workflows.default_sarm.sweep import (
    Candidate,
    SweepData,
    dev_scores,
    fit_head,
    head_config,
    train_candidate_sae,
)

ABLATION_FILE = "ablation.json"
SAMPLES = 100_000  # each retrained SAE sees what a sweep candidate saw
SHAPES = (  # (what changes, candidate)
    ("k = 32", Candidate(21, "sequence", 4096, 32, SAMPLES)),
    ("k = 128", Candidate(21, "sequence", 4096, 128, SAMPLES)),
    ("width 2,048", Candidate(21, "sequence", 2048, 64, SAMPLES)),
    ("width 8,192, k = 32", Candidate(21, "sequence", 8192, 32, SAMPLES)),
    ("token-level, width 8,192, k = 32", Candidate(21, "token", 8192, 32, SAMPLES)),
    ("layer 18", Candidate(18, "sequence", 4096, 64, SAMPLES)),
)
DROPPED_SOURCES = ("truthfulqa_judged", "truthfulqa_best")


@dataclass
class EvalSet:
    name: str
    split: object
    u: dict[int, torch.Tensor]  # layer -> u_T


def eval_sets(plan: BuildPlan, layers) -> list[EvalSet]:
    """test, xstest and every captured held-out set, with ``u_T`` at ``layers``."""
    names = [("test", None), ("xstest", None)]
    names += [(n, HELDOUT_DIR) for n in heldout_sets() if (plan.root() / "capture" / n).is_dir()]
    out = []
    for name, root in names:
        cap = cached_capture(plan, name)
        split = load_split(name, root=root, limit=plan.limit)
        out.append(EvalSet(name, split, {layer: cap.final[layer].float() for layer in layers}))
    return out


def accuracy(split, rewards: np.ndarray) -> float:
    return float(split_report(split, {"r": rewards})["r"]["all"]["accuracy"])


class Ablation:
    """The rows of the table, computed one at a time (progress on stderr)."""

    def __init__(self, plan: BuildPlan = FULL):
        self.plan = plan
        self.data = SweepData.load(plan)
        layers = sorted({21, *(c.layer for _, c in SHAPES)})
        self.sets = eval_sets(plan, layers)
        self.heldout = [s for s in self.sets if s.name not in ("test", "xstest")]
        self.rows: list[dict] = []

    # ------------------------------------------------------------------ scoring
    def _score(self, what: str, rewards_of, dev_rewards: np.ndarray, extra: dict) -> dict:
        per_set = {s.name: round(accuracy(s.split, rewards_of(s)), 4) for s in self.sets}
        held = [per_set[s.name] for s in self.heldout]
        row = {
            "row": what,
            "dev_macro": dev_scores(self.data, dev_rewards)["dev_macro"],
            "heldout_mean": round(float(np.mean(held)), 4) if held else None,
            "per_set": per_set,
            **extra,
        }
        self.rows.append(row)
        print(f"[ablation] {json.dumps(row)}", file=sys.stderr, flush=True)
        return row

    def _pairs(self, drop: tuple[str, ...]) -> np.ndarray | None:
        if not drop:
            return None
        sources = [
            str(self.data.train.groups[g].meta.get("source")) for g in self.data.train_pairs.group
        ]
        return np.flatnonzero(~np.isin(sources, drop))

    # ------------------------------------------------------------------ rows
    def dense(self, layer: int, decay: float = 1e-3, drop: tuple[str, ...] = ()) -> dict:
        u_tr = self.data.train_cap.final[layer].float()
        head = fit_head(
            self.data, u_tr, None, head_config(decay, 0.0, self.plan.seed), self._pairs(drop)
        )
        w = head.weight
        dev = (self.data.dev_cap.final[layer].float() @ w).numpy()
        label = f"dense probe, layer {layer}" + (", without TruthfulQA" if drop else "")
        return self._score(label, lambda s: (s.u[layer] @ w).numpy(), dev, {"kind": "dense"})

    def sae_heads(self, what: str, sae, k: int, layer: int, d_sae: int, decays=(1e-3,),
                  drop: tuple[str, ...] = (), joint: bool = True) -> None:  # fmt: skip
        """SAE-only heads (one per decay) and the joint error head for one SAE."""
        enc = {s.name: Encoded.of(sae, s.u[layer], k) for s in self.sets}
        tr = Encoded.of(sae, self.data.train_cap.final[layer].float(), k)
        dev = Encoded.of(sae, self.data.dev_cap.final[layer].float(), k)
        quality = {
            "fvu_heldout": round(float(np.mean([enc[s.name].fvu(s.u[layer]) for s in self.heldout])), 4),
            "dead_heldout": round(float(np.mean([enc[s.name].dead_fraction(d_sae) for s in self.heldout])), 4),
            "fvu_dev": round(dev.fvu(self.data.dev_cap.final[layer].float()), 4),
        }  # fmt: skip
        pairs = self._pairs(drop)
        for decay in decays:
            cfg = head_config(decay, 0.0, self.plan.seed)
            head = Head(fit_head(self.data, (tr.indices, tr.values), d_sae, cfg, pairs).weight)
            self._score(
                f"{what}; SAE head, weight decay {decay:g}",
                lambda s, h=head: h.rewards(enc[s.name].latents(d_sae, None)),
                head.rewards(dev.latents(d_sae, None)),
                {"kind": "sae", **quality},
            )
        if joint:
            idx = self.data.train_pairs
            take = np.arange(idx.n_pairs) if pairs is None else pairs
            head, readout, _ = train_error_head(
                tr.values, tr.indices, tr.errors, idx.chosen_row[take], idx.rejected_row[take],
                head_config(1e-3, 0.0, self.plan.seed), n_latents=d_sae, groups=idx.group[take],
                pair_weights=self.data.train_weights[take],
            )  # fmt: skip
            self._score(
                f"{what}; SAE + error head (joint)",
                lambda s: head.rewards(enc[s.name].latents(d_sae, readout)),
                head.rewards(dev.latents(d_sae, readout)),
                {"kind": "sae+error", **quality},
            )

    def run(self, shipped_dir: Path, shapes=SHAPES) -> list[dict]:
        shipped = shipped_sae(shipped_dir)
        manifest = json.loads((shipped_dir / "manifest.json").read_text())
        layer, k, d_sae = manifest["sae"]["layer"], manifest["sae"]["k"], manifest["sae"]["d_sae"]
        for at in sorted({layer, *(c.layer for _, c in shapes)}):
            self.dense(at)
        decays = sorted({d for d, l1 in HEAD_GRID if l1 == 0.0} | {1e-1})
        self.sae_heads("shipped SAE", shipped.sae, k, layer, d_sae, decays)
        self.dense(layer, drop=DROPPED_SOURCES)
        self.sae_heads("shipped SAE, without TruthfulQA", shipped.sae, k, layer, d_sae,
                       drop=DROPPED_SOURCES)  # fmt: skip
        for what, c in shapes:
            start = time.perf_counter()
            trained = train_candidate_sae(self.data, c, self.plan.sae_batch_size)
            print(f"[ablation] {what}: SAE in {time.perf_counter() - start:.0f} s", file=sys.stderr)
            self.sae_heads(f"{what} ({c.n_samples:,} samples)", trained.sae, c.k, c.layer, c.d_sae)
        return self.rows


def markdown(rows: list[dict]) -> str:
    """The ablation table: one row per change, dev and held-out figures, SAE quality."""
    head = "| change | head | dev macro | held-out mean | FVU held-out | dead held-out |"
    lines = [head, "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        what, _, kind = r["row"].partition("; ")
        fvu = f"{r['fvu_heldout']:.3f}" if "fvu_heldout" in r else ""
        dead = f"{r['dead_heldout']:.3f}" if "dead_heldout" in r else ""
        lines.append(
            f"| {what} | {kind or r['kind']} | {r['dev_macro']:.3f} | "
            f"{r['heldout_mean']:.3f} | {fvu} | {dead} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=str(assets_dir()))
    parser.add_argument("--no-retrain", action="store_true", help="skip the retrained SAEs")
    args = parser.parse_args(argv)
    torch.manual_seed(FULL.seed)
    model_dir = Path(args.model_dir)
    rows = Ablation().run(model_dir, () if args.no_retrain else SHAPES)
    (model_dir / ABLATION_FILE).write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
