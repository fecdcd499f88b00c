"""``sarm serve``: a reward server that RLHF training frameworks call."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from sarm.configs import ModelConfig
from workflows.commands.flags import ConfigFlags
from workflows.serve.protocol import DEFAULT_MAX_BODY_BYTES

DESCRIPTION = (
    "Serve a SARM over HTTP: POST /get_reward (OpenRLHF's remote reward protocol: "
    '{"query": [rendered rollouts]} -> {"rewards": [...]}), POST /score (reward, bias and the '
    "top feature contributions with their explanations), GET /health, GET /metrics "
    "(Prometheus). Concurrent requests are gathered by scoring workers: on CUDA into "
    "token-budget batches, on the CPU onto one single-threaded worker per core. "
    "Every response carries the served head's hash in X-SARM-Head-Hash. "
    "Example: sarm serve --model default --head exported/head.safetensors"
)
MODEL = ConfigFlags(ModelConfig, only=("model", "device", "max_batch_tokens"))
#: conversations per forward pass by device: on 2 CPU cores padded batches of concurrent
#: requests ran slower per token than single rows (benchmarks/reward_server.py), while one
#: single-threaded worker per core ran faster; on CUDA the batch is the parallelism
BATCH_ROWS = {"cpu": 1, "cuda": 8}
DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    p.add_argument(
        "--head",
        default=None,
        help="the head to serve: an exported head.safetensors (or its directory), or the "
        "name of a head version saved in --store (default: the model's own head)",
    )
    p.add_argument(
        "--store",
        default=None,
        help="feature store whose explanations /score shows and whose head versions --head "
        "may name (default for --model default: its built store, if any)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="backbone dtype: auto is bfloat16 on CUDA and float32 on the CPU",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="at most this many conversations per forward pass (default: 8 on CUDA, 1 on the "
        "CPU, where one single-threaded worker per core outruns padded batches)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="scoring threads: on CUDA 1 (the batch is the parallelism); on the CPU one per "
        "core, each running torch on one thread (default)",
    )
    p.add_argument(
        "--max-body-mb",
        type=float,
        default=DEFAULT_MAX_BODY_BYTES / 2**20,
        help="largest request body read, in MiB (default 8); larger ones get 413",
    )


def _check_args(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    if not args.max_body_mb > 0:
        raise ValueError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    if not args.host.strip():
        raise ValueError("--host is empty")
    for flag in ("workers", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be 1 or more, got {value}")


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def scoring_workers(requested: int | None, device: str) -> int:
    """Worker threads for ``device``; on the CPU torch gets ``cores // workers`` threads each."""
    if requested is not None:
        return requested
    return 1 if _kind(device) == "cuda" else cpu_cores()


def run(args: argparse.Namespace) -> int:
    cfg = MODEL.from_args(args)
    _check_args(args)
    import uvicorn  # heavy imports once the arguments are known to be good

    from workflows.serve.app import ServerConfig, create_app
    from workflows.serve.setup import store_for

    store_path = store_for(cfg.model, args.store)
    workers = scoring_workers(args.workers, cfg.device)
    if _kind(cfg.device) == "cpu":
        import torch

        torch.set_num_threads(max(1, cpu_cores() // workers))
    model, explanations = _load(cfg, args, store_path)
    config = ServerConfig(
        max_batch_tokens=cfg.max_batch_tokens,
        max_batch_rows=args.batch_size or BATCH_ROWS[_kind(cfg.device)],
        max_body_bytes=int(args.max_body_mb * 2**20),
        model_name=cfg.model,
        workers=workers,
    )
    app = create_app(model, explanations, config)
    print(_banner(args, model, store_path, len(explanations), workers), file=sys.stderr, flush=True)
    level = "info" if logging.getLogger().isEnabledFor(logging.INFO) else "warning"
    uvicorn.run(app, host=args.host, port=args.port, log_level=level, timeout_graceful_shutdown=5)
    return 0


def _load(cfg: ModelConfig, args: argparse.Namespace, store_path):
    import torch

    from feature_store import FeatureStore
    from sarm.checkpoints import load_sarm
    from workflows.serve.setup import resolve_head, shown_explanations

    dtype = _dtype(args.dtype, cfg.device, torch)
    model = cfg.apply_batching(load_sarm(cfg.model, device=cfg.device, dtype=dtype))
    if store_path is None:
        if args.head:
            model.set_head(resolve_head(args.head, None))
        return model, {}
    with FeatureStore.open_for_reading(store_path) as store:
        store.check_model(model.fingerprint())
        if args.head:
            model.set_head(resolve_head(args.head, store))
        return model, shown_explanations(store)


def _dtype(name: str, device: str, torch):
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else None
    return getattr(torch, name)


def _banner(args, model, store_path, n_explained: int, workers: int) -> str:
    where = f"http://{args.host}:{args.port}"
    lines = [
        f"sarm serve: {args.model} (layer {model.layer}, SAE {model.sae_hash()}, "
        f"head {model.head.hash()}) on {model.backbone.device}, {workers} scoring worker(s)",
        f"  explanations: {n_explained} features from {store_path}"
        if store_path
        else "  explanations: none (no --store)",
        f"  POST {where}/get_reward   POST {where}/score   GET {where}/health   GET {where}/metrics",
    ]
    return "\n".join(lines)
