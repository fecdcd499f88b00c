"""Step 3 of the real default's build: train the chosen SARM, evaluate it, write the artefacts.

Reads the sweep (``sweep.jsonl``), takes the candidate chosen by
:func:`choose`, trains its SAE for longer on the train split, rounds the SAE to
float16 (what ships), tunes the head's regularisation and the dense baseline's
on dev, then reports both on the held-out test split and xstest beside the
length baselines. Writes to ``sarm/assets/default`` (or ``--out``):

- the SARM in our checkpoint layout (``sarm.json``, ``sae/``, ``head.safetensors``)
  and the dense baseline (``baseline_head.safetensors``);
- ``audit/latents.parquet``: pooled latents, reward and token count of every
  distinct test and xstest conversation, keyed by a hash of the conversation;
- ``manifest.json``: split hashes, seeds, hyper-parameters, the sweep and the
  held-out figures.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from sarm.backbones import load_backbone
from sarm.checkpoints import save_sarm
from sarm.constants import BASELINE_HEAD_FILE, EMBEDDED_BACKBONE
from sarm.head import Head
from sarm.latents import SparseLatents
from sarm.model import SARM
from sarm.saes import SAEMeta
from sarm.train.metrics import sae_metrics
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows, conversation_key
from workflows.default_sarm.capture import cached_capture
from workflows.default_sarm.data import load_split, splits_dir
from workflows.default_sarm.error_head import (
    AUDIT_SET_NAMES,
    KEPT_WITH_SAE,
    MANIFEST_KEPT_WITH_SAE,
    Candidate,
    Encoded,
    audit_columns,
    centred_candidate,
    decoder_of,
    evaluate_set,
    evaluation_sets,
    rewards_of,
    shipped_sae,
)
from workflows.default_sarm.error_head import candidates as error_candidates
from workflows.default_sarm.error_head import choose as choose_head
from workflows.default_sarm.plan import BuildPlan
from workflows.default_sarm.report import markdown_table, sets_markdown
from workflows.default_sarm.sweep import Candidate as SAECandidate
from workflows.default_sarm.sweep import (
    SweepData,
    dev_scores,
    encode_rows,
    fit_head,
    head_config,
    prompt_subsets,
    read_sweep,
    train_candidate_sae,
)

MANIFEST_FILE = "manifest.json"
HEAD_GRID = ((0.0, 0.0), (1e-3, 0.0), (1e-2, 0.0), (0.0, 1e-4), (0.0, 1e-3))
DENSE_GRID = ((0.0, 0.0), (1e-3, 0.0), (1e-2, 0.0), (1e-1, 0.0))
NEAR_BEST = 0.01  # candidates within 1 point of the best dev macro accuracy tie


def assets_dir() -> Path:
    """``sarm/assets/default``: the shipped default (installed with the package)."""
    return Path(__file__).resolve().parents[2] / "sarm" / "assets" / "default"


def choose(rows: list[dict]) -> SAECandidate:
    """Best dev macro accuracy; among candidates within 1 point of it, the purest features."""
    saes = [r for r in rows if r["kind"] == "sae"]
    if not saes:
        raise ValueError("the sweep has no SAE candidates; run the sweep first")
    best = max(r["dev_macro"] for r in saes)
    near = [r for r in saes if r["dev_macro"] >= best - NEAR_BEST]
    pick = max(near, key=lambda r: (r["purity_top20"], r["dev_macro"]))
    return SAECandidate(pick["layer"], pick["level"], pick["d_sae"], pick["k"], pick["n_samples"])


def round_sae_to_half(sae) -> None:
    """Round every SAE parameter to float16 and back, in place: what ships is what runs."""
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(p.half().float())


CURVE_FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def data_size_curve(data, sae_rows, d_sae, u_tr, head_row, dense_row, sae_dev, dense_dev, seed):
    """Dev macro accuracy of both heads (their tuned settings) on growing shares of train prompts."""
    subsets = prompt_subsets(data, CURVE_FRACTIONS, seed)
    out = []
    for fraction, pairs in subsets.items():
        row = {"fraction": fraction, "n_pairs": len(pairs)}
        for name, rows, n_features, best, dev in (
            ("sarm", sae_rows, d_sae, head_row, sae_dev),
            ("dense", u_tr, None, dense_row, dense_dev),
        ):
            cfg = head_config(best["weight_decay"], best["l1"], seed)
            head = fit_head(data, rows, n_features, cfg, pairs)
            row[name] = dev_scores(data, dev(head.weight))["dev_macro"]
        out.append(row)
    return out


def sparse(values: torch.Tensor, indices: torch.Tensor, d_sae: int) -> SparseLatents:
    return SparseLatents.from_topk(values.float().numpy(), indices.numpy(), d_sae)


def centred(head: Head, train_latents: SparseLatents) -> Head:
    """``head`` with the bias that centres its rewards over the train responses at 0."""
    return Head(head.weights, -float(head.rewards(train_latents).mean()))


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tune(data: SweepData, rows, n_features, dev_reward, grid, seed: int) -> tuple[object, dict]:
    """Train one head per ``(weight_decay, l1)`` of ``grid``; keep the best on dev."""
    best, best_row = None, {}
    for decay, l1 in grid:
        head = fit_head(data, rows, n_features, head_config(decay, l1, seed))
        scores = dev_scores(data, dev_reward(head.weight))
        if best is None or scores["dev_macro"] > best_row["dev_macro"]:
            best, best_row = head, {"weight_decay": decay, "l1": l1, **scores}
    return best, best_row


class Builder:
    """The final step, timed: SAE, heads, held-out report, artefacts."""

    def __init__(
        self,
        plan: BuildPlan,
        out: Path | None = None,
        progress: bool = True,
        reuse_sae: bool = False,
    ):
        self.plan = plan
        self.out = out or assets_dir()
        self.progress = progress
        self.reuse_sae = reuse_sae  # keep out/'s SAE (and its evidence); retrain the heads only
        self.seconds: dict[str, float] = {}

    def _timed(self, name: str, fn):
        start = time.perf_counter()
        value = fn()
        self.seconds[name] = round(time.perf_counter() - start, 1)
        print(f"[build] {name}: {self.seconds[name]} s", file=sys.stderr, flush=True)
        return value

    def run(self) -> dict:
        torch.manual_seed(self.plan.seed)
        sweep = read_sweep(self.plan)
        if not sweep and self.reuse_sae:  # the sweep that chose the shipped SAE
            sweep = json.loads((self.out / MANIFEST_FILE).read_text())["sweep"]
        chosen = choose(sweep)
        final = replace(chosen, n_samples=chosen.n_samples * self.plan.final_factor)
        data = self._timed("load", lambda: SweepData.load(self.plan))
        if self.reuse_sae:
            trained = shipped_sae(self.out)
        else:
            trained = self._timed(
                "sae",
                lambda: train_candidate_sae(data, final, self.plan.sae_batch_size, self.progress),
            )
            round_sae_to_half(trained.sae)
        layer, k = final.layer, final.k
        u_tr, u_dev = data.train_cap.final[layer], data.dev_cap.final[layer]
        shipped_quality = sae_metrics(trained.sae, u_dev, k)  # after the float16 rounding
        v_tr, i_tr = encode_rows(trained, u_tr, k)
        v_dev, i_dev = encode_rows(trained, u_dev, k)
        head, head_row = self._timed(
            "head",
            lambda: tune(
                data,
                (i_tr, v_tr),
                final.d_sae,
                lambda w: (v_dev * w[i_dev]).sum(-1).numpy(),
                HEAD_GRID,
                self.plan.seed,
            ),
        )
        dense, dense_row = self._timed(
            "dense",
            lambda: tune(
                data, u_tr, None, lambda w: (u_dev @ w).numpy(), DENSE_GRID, self.plan.seed
            ),
        )
        curve = self._timed(
            "data-size curve",
            lambda: data_size_curve(data, (i_tr, v_tr), final.d_sae, u_tr, head_row, dense_row,
                                    lambda w: (v_dev * w[i_dev]).sum(-1).numpy(),
                                    lambda w: (u_dev @ w).numpy(), self.plan.seed),
        )  # fmt: skip
        sarm_head = centred(Head(head.weight.numpy(), 0.0), sparse(v_tr, i_tr, final.d_sae))
        dense_head = centred(
            Head(dense.weight.numpy(), 0.0), SparseLatents.from_dense(u_tr.numpy())
        )
        enc_tr = Encoded.of(trained.sae, u_tr, k)
        scored = self._timed(
            "error head",
            lambda: error_candidates(
                data, enc_tr, Encoded.of(trained.sae, u_dev, k), final.d_sae, sarm_head,
                dense_head, *decoder_of(trained.sae),
            ),
        )  # fmt: skip
        shipped = centred_candidate(choose_head(scored), enc_tr, final.d_sae)
        heads = [centred_candidate(c, enc_tr, final.d_sae) for c, _ in scored]
        heldout, quality, audit = self._timed(
            "evaluate", lambda: self._heldout(trained, shipped, heads, dense_head, layer, k)
        )
        manifest = self._manifest(sweep, final, trained, head_row, dense_row, heldout)
        manifest["error_head"] = {
            "chosen": shipped.name,
            "candidates": [{"name": c.name, **c.settings, **dev} for c, dev in scored],
            "per_set": quality,
        }
        manifest["data_size_curve"] = curve
        manifest["sae"]["dev_u_T_after_float16"] = {
            key: round(float(value), 4) for key, value in shipped_quality.items()
        }
        self._timed(
            "write", lambda: self._write(trained, shipped, dense_head, final, audit, manifest)
        )
        return manifest

    def _heldout(self, trained, shipped: Candidate, heads, dense_head: Head, layer: int, k: int):
        """Figures on test, xstest and the public held-out sets; the audit rows (test, xstest)."""
        report, quality = {}, {}
        audit = AuditRows.empty(k + (shipped.readout is not None))
        d_sae = trained.sae.cfg.d_sae
        for name, root in evaluation_sets(self.plan):
            split = load_split(name, root=root, limit=self.plan.limit)
            cap = cached_capture(self.plan, name)
            u = cap.final[layer].float()
            enc = Encoded.of(trained.sae, u, k)
            as_sarm = replace(shipped, name="sarm")  # what ships is reported as "sarm"
            found = evaluate_set(split, u, enc, [as_sarm, *heads], dense_head, d_sae)
            report[name] = found.pop("report")
            quality[name] = {**found, "n_pairs": report[name]["sarm"]["all"]["n_pairs"]}
            if name in AUDIT_SET_NAMES:
                values, indices = audit_columns(enc, shipped, d_sae)
                audit = audit.extend(
                    name,
                    [conversation_key(c) for c in split.conversations],
                    values,
                    indices,
                    rewards_of(shipped, enc, d_sae),
                    cap.n_tokens.numpy(),
                    cap.truncated.numpy(),
                )
        return report, quality, audit

    def _manifest(self, sweep, final, trained, head_row, dense_row, heldout) -> dict:
        splits = {
            name: file_sha256(splits_dir() / f"{name}.jsonl.gz")
            for name in ("train", "dev", "test", "xstest")
        }
        return {
            "format": 1,
            "name": "default",
            "backbone": {
                "name": EMBEDDED_BACKBONE,
                "layer": final.layer,
                "max_length": self.plan.max_length,
            },
            "data": {"splits_sha256": splits, "splits_dir": "data/prefs/splits"},
            "plan": self.plan.to_dict(),
            "plan_key": self.plan.key(),
            "sae": {
                **asdict(final),
                "metrics": {k: round(float(v), 4) for k, v in trained.metrics.items()},
                "stored_dtype": "float16",
            },
            "head": head_row,
            "dense_baseline": dense_row,
            "sweep": sweep,
            "heldout": heldout,
            "build_seconds": self.seconds,
            "machine": {
                "torch": torch.__version__,
                "python": platform.python_version(),
                "processor": platform.machine(),
                "threads": torch.get_num_threads(),
            },
        }

    def _write(self, trained, shipped: Candidate, dense_head, final, audit, manifest) -> None:
        tmp = self.out.with_name(self.out.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        backbone = load_backbone(EMBEDDED_BACKBONE, final.layer, max_length=self.plan.max_length)
        mode = "last" if final.level == "sequence" else "tokens"  # the level it was trained at
        meta = SAEMeta(k=final.k, mode=mode, backbone=EMBEDDED_BACKBONE, layer=final.layer)
        model = SARM(backbone, trained.sae, shipped.head, meta, error_readout=shipped.readout)
        save_sarm(model, tmp)
        halve_sae_file(tmp / "sae")
        if self.reuse_sae:  # the same SAE: its evidence and the bias audit's files stay
            manifest = _with_kept_entries(manifest, self.out / MANIFEST_FILE)
            for name in KEPT_WITH_SAE:
                if (self.out / name).exists():
                    copy = shutil.copytree if (self.out / name).is_dir() else shutil.copy2
                    copy(self.out / name, tmp / name)
        dense_head.save(tmp / BASELINE_HEAD_FILE, {"kind": "dense baseline on u_T"})
        audit.write(tmp / AUDIT_FILE)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        per_set = manifest.get("error_head", {}).get("per_set")
        (tmp / "heldout.md").write_text(heldout_markdown(manifest["heldout"], per_set))
        if self.out.exists():
            shutil.rmtree(self.out)
        tmp.replace(self.out)


def _with_kept_entries(manifest: dict, previous: Path) -> dict:
    """``manifest`` plus the previous one's entries for what stays with the SAE."""
    if not previous.is_file():
        return manifest
    before = json.loads(previous.read_text())
    kept = {k: before[k] for k in MANIFEST_KEPT_WITH_SAE if k in before}
    return {**manifest, **kept}


def halve_sae_file(sae_dir: Path) -> None:
    """Store the SAE's weights as float16 (they were rounded to float16 before use)."""
    from safetensors.torch import load_file, save_file

    path = sae_dir / "sae_weights.safetensors"
    tensors = {k: v.half() for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path))


def heldout_markdown(heldout: dict, per_set: dict | None = None) -> str:
    parts = [
        "## every set (accuracy over all pairs)",
        "",
        sets_markdown(heldout, per_set or {}),
        "",
    ]
    for split, report in heldout.items():
        parts += [f"## {split}: per category", "", markdown_table(report), ""]
        parts += [f"## {split}: per source", "", markdown_table(report, "per_source"), ""]
    return "\n".join(parts)


def build_from_cache(
    plan: BuildPlan, out: Path | None = None, progress: bool = True, reuse_sae: bool = False
) -> dict:
    """Train, evaluate and write the default from the plan's captures and sweep."""
    return Builder(plan, out, progress, reuse_sae).run()
