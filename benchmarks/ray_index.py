"""Ray indexing against the single-process ingest, on the same machine, in one process.

Both sides index the same real conversations (groups of the vendored test
split, ``data/prefs/splits/test.jsonl.gz``) with the same SARM (the embedded
SmolLM2 backbone cut at layer 15 and the demo-sized SAE, 576 -> 4096, k = 32,
random weights; saved once so each Ray actor loads it from disk) and keep
feature evidence, as ``sarm index`` does by default:

- local: ``feature_store.ingest`` into a fresh store (statistics included);
- ray: ``ingest_ray`` on a local cluster started once beforehand (its start is
  reported, not counted), then ``merge_parts`` into a fresh store.

A Ray run pays a fixed cost (a new actor process imports torch and loads the
model; Ray Data plans the run) that a long run does not notice, so each side
indexes a small and a full set and the figures are per extra response: the
marginal time ``t(full) - t(small)``. On CPUs the Ray actors share all cores
but one (one stays for the task that feeds them), so with c cores they have
c - 1. Ratios of marginal time (local / ray: higher is better for Ray),
medians of alternating rounds:

- ``ray_vs_local_all_cores``: local torch on every core, as a user would run it;
- ``ray_fixed_s``: Ray's fixed cost per run (the intercept);
- ``ray_vs_local_same_cores`` (last line): local torch on the actors' c - 1
  cores: what Ray itself costs per response (scheduling, Arrow IPC, parts,
  merge). Target: >= 0.85.

Usage: ``python benchmarks/ray_index.py [--groups 48] [--small 6] [--rounds 2]``
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from feature_store import FeatureStore, ingest, merge_parts
from feature_store.ray_engine import RaySettings, ingest_ray
from sarm.backbones import load_backbone
from sarm.checkpoints import load_sarm, save_sarm
from sarm.data import load_preferences
from sarm.explain.evidence import EvidenceSpec
from sarm.head import Head
from sarm.model import SARM
from sarm.saes import SAEMeta, make_topk_sae
from sarm.types import responses_of

LAYER, D_SAE, K = 15, 4096, 32
DATA = Path(__file__).resolve().parents[1] / "data" / "prefs" / "splits" / "test.jsonl.gz"
CHUNK, BATCH = 16, 8


def saved_sarm(directory: Path) -> Path:
    backbone = load_backbone("smollm2-135m-instruct", layer=LAYER)
    torch.manual_seed(0)
    sae = make_topk_sae(backbone.d_model, D_SAE, K)
    sarm = SARM(backbone, sae, Head(torch.randn(D_SAE) * 0.01), SAEMeta(k=K))
    return save_sarm(sarm, directory / "model")


def load_in_actor(path: Path) -> SARM:
    """The SARM inside an actor, with torch on the actor's CPUs (as ``sarm index`` does)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    return load_sarm(path)


def run_local(model: Path, groups, work: Path, threads: int) -> float:
    torch.set_num_threads(threads)
    sarm = load_sarm(model)
    store = work / f"local-{time.monotonic_ns()}.duckdb"
    start = time.perf_counter()
    with FeatureStore.open(store) as conn:
        ingest(conn, sarm, groups, chunk_size=CHUNK, batch_size=BATCH, progress=False,
               evidence=EvidenceSpec())  # fmt: skip
    return time.perf_counter() - start


def run_ray(model: Path, groups, work: Path) -> float:
    sarm = load_sarm(model)
    tag = time.monotonic_ns()
    parts, store = work / f"parts-{tag}", work / f"ray-{tag}.duckdb"
    make = functools.partial(load_in_actor, model)
    start = time.perf_counter()
    ingest_ray(sarm, make, groups, parts, RaySettings(), chunk_size=CHUNK, batch_size=BATCH,
               progress=False, evidence=EvidenceSpec())  # fmt: skip
    with FeatureStore.open(store) as conn:
        merge_parts(conn, parts, progress=False)
    return time.perf_counter() - start


def timed(side: str, model: Path, groups, work: Path, cores: int) -> float:
    if side == "ray":
        return run_ray(model, groups, work)
    return run_local(model, groups, work, cores if side == "all" else max(1, cores - 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=48)
    parser.add_argument("--small", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    full = load_preferences(str(DATA), limit=args.groups).groups
    small = full[: args.small]
    n_full, n_small = len(responses_of(full)), len(responses_of(small))
    cores = os.cpu_count() or 2
    times: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="sarm-ray-bench-") as tmp:
        work = Path(tmp)
        model = saved_sarm(work)
        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        print(f"Ray started in {time.perf_counter() - start:.1f} s; {cores} cores; "
              f"{n_small} and {n_full} responses")  # fmt: skip
        run_ray(model, small, work)  # warm-up: first imports and forward passes
        for r in range(args.rounds):
            sides = ("all", "same", "ray") if r % 2 == 0 else ("ray", "same", "all")
            for side in sides:
                for groups in (full, small):
                    key = (side, len(groups))
                    times.setdefault(key, []).append(timed(side, model, groups, work, cores))
            print(
                "  ".join(f"{k[0]}@{k[1]}g {statistics.median(v):.1f} s" for k, v in times.items())
            )
        ray.shutdown()
    med = {k: statistics.median(v) for k, v in times.items()}
    extra = {s: med[(s, len(full))] - med[(s, len(small))] for s in ("all", "same", "ray")}
    per = {s: 1000 * extra[s] / (n_full - n_small) for s in extra}
    print("marginal ms per response: " + ", ".join(f"{s} {v:.0f}" for s, v in per.items()))
    fixed = med[("ray", len(small))] - extra["ray"] * n_small / (n_full - n_small)
    print(f"ray_vs_local_all_cores={extra['all'] / extra['ray']:.3f}")
    print(f"ray_fixed_s={fixed:.1f}")
    print(f"ray_vs_local_same_cores={extra['same'] / extra['ray']:.3f}")


if __name__ == "__main__":
    main()
