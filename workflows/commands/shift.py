"""``sarm shift``: find the features behind a preference, edit them, measure the shift.

Discovers the features that separate a target set of responses from a
complement, applies actions to the top ones (or to ``--features``), reports how
rewards and pairwise accuracy move on each set, and saves the resulting head as
a new head version in the feature store (``--no-save`` to only preview).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from feature_store import FeatureStore
from feature_store.heads import INGEST_HEAD, check_name
from sarm.cachedir import default_store_path, demo_store_path
from sarm.configs import ModelConfig, ShiftConfig
from sarm.constants import DEFAULT_MODEL, DEMO_MODEL
from sarm.interventions import Intervention, parse_actions
from sarm.shift import SetSpec
from workflows.commands.flags import ConfigFlags, OutputConfig, json_text
from workflows.shift import prepare_shift

DEFAULT_ACTION = "scale:0.0"
FEATURE_COLUMNS = (
    "feature_id",
    "label",
    "score",
    "mean_target",
    "mean_complement",
    "freq_ratio",
    "selectivity",
    "salience",
    "weight",
)
DESCRIPTION = (
    "Rank the features that separate a TARGET set of responses from a COMPLEMENT, "
    "apply actions to the top ones, report mean |delta reward| and pairwise accuracy "
    "on each set and the selectivity ratio (target / complement), and save the edited "
    "head as a new head version in the store. Set specs: subset:NAME[,NAME], "
    "subset:!NAME, role:chosen|rejected|single, feature:ID[,ID], label:TEXT, all, "
    "rest (complement only), file:PATH, demo:train|test|all; join terms with '&'. "
    "Actions: set:V, scale:V, add:V, zero, act_add:V, act_mul:V, optionally @ID,ID. "
    "Example: sarm shift --model smollm2-demo --target subset:refusal --top 5 "
    "--action scale:0.0"
)
MODEL = ConfigFlags(ModelConfig)
SHIFT = ConfigFlags(ShiftConfig)
OUTPUT = ConfigFlags(OutputConfig, only=("json",))


def add_arguments(p: argparse.ArgumentParser) -> None:
    MODEL.add_to(p)
    SHIFT.add_to(p)
    p.add_argument(
        "--store",
        help="feature store (default for default / smollm2-demo: the store built for it)",
    )
    p.add_argument("--data", help="score this data (file or demo:test) instead of reading a store")
    p.add_argument("--features", help="edit these feature ids (comma-separated) instead of the top")
    p.add_argument(
        "--action",
        action="append",
        help=f"action, repeatable, applied in order (default {DEFAULT_ACTION})",
    )
    p.add_argument("--from-head", help="start from this saved head version instead of the model's")
    p.add_argument("--name", help="name of the head version to save (default: generated)")
    p.add_argument("--note", default="", help="note stored with the head version")
    p.add_argument("--no-save", action="store_true", help="preview only: save no head version")
    OUTPUT.add_to(p)


def _check_args(args: argparse.Namespace) -> list[str]:
    """Validate cheap arguments before any model is loaded; returns the action specs."""
    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    specs = args.action or [DEFAULT_ACTION]
    items = [Intervention.parse(s, features=[0]) for s in specs]
    if not args.no_save and any(i.action == "act_add" for i in items):
        raise ValueError(
            "act_add cannot be saved as a linear head (it depends on whether a latent is "
            "active); add --no-save to preview it, or use a weight action or act_mul"
        )
    if args.name is not None:
        check_name(args.name)
    return specs


def _store_path(args: argparse.Namespace) -> Path | None:
    if args.store:
        return Path(args.store).expanduser()
    builtin = {DEMO_MODEL: demo_store_path(), DEFAULT_MODEL: default_store_path()}
    path = builtin.get(args.model)
    return path if path is not None and path.is_file() else None


def _needs_store(args: argparse.Namespace) -> bool:
    specs = [SetSpec.parse(args.target), SetSpec.parse(args.complement)]
    filters_base = any(not s.sources and not s.is_rest for s in specs)
    return (filters_base and args.data is None) or not args.no_save or bool(args.from_head)


def _features(text: str | None, table) -> list[int]:
    if text is not None:
        try:
            return [int(f) for f in text.split(",") if f.strip()]
        except ValueError:
            raise ValueError(
                f"--features must be comma-separated feature ids, got {text!r}"
            ) from None
    if table.empty:
        raise ValueError("no feature separates the target from the complement in this direction")
    return [int(f) for f in table["feature_id"]]


def run(args: argparse.Namespace) -> int:
    specs = _check_args(args)
    cfg, model_cfg = SHIFT.from_args(args), MODEL.from_args(args)
    path = _store_path(args)
    if path is None and _needs_store(args):
        raise ValueError(
            "this needs a feature store: give --store PATH (the store the model was indexed "
            "into), or --data FILE with --no-save"
        )
    if path is not None and not path.is_file():
        raise ValueError(f"feature store {path} does not exist; build it with `sarm index`")
    from sarm.checkpoints import (
        load_sarm,  # heavy (torch): loaded on use so `sarm --help` stays fast
    )

    model = model_cfg.apply_batching(load_sarm(model_cfg.model, device=model_cfg.device))
    if path is None:
        return _run(args, cfg, model_cfg.batch_size, specs, model, None)
    with FeatureStore.open_for_reading(path) as store:  # head versions are saved all the same
        return _run(args, cfg, model_cfg.batch_size, specs, model, store)


def _run(
    args: argparse.Namespace, cfg: ShiftConfig, batch_size: int, specs: list[str], model, store
) -> int:
    start = store.load_head(args.from_head) if args.from_head else None
    shift = prepare_shift(
        cfg.target,
        cfg.complement,
        store=store,
        model=model,
        data=args.data,
        weight=None if start is None else start.weights,
        bias=None if start is None else start.bias,
        batch_size=batch_size,
        progress=not args.json,
    )
    table = shift.discover(limit=cfg.top, direction=cfg.direction, order_by=cfg.order_by)
    interventions = parse_actions(specs, _features(args.features, table))
    report = shift.evaluate(interventions)
    saved = None if args.no_save else _save(args, store, model, shift, interventions, report)
    out = _result(args, store, shift, table, report, saved)
    print(json_text(out) if args.json else format_result(out))
    return 0


def _default_name(args: argparse.Namespace, interventions) -> str:
    text = json.dumps([args.target, args.complement, [i.spec() for i in interventions]])
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"shift-{stamp}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def _parent(args: argparse.Namespace, store, model) -> str | None:
    if args.from_head:
        return args.from_head
    same = (store.fingerprint() or {}).get("head") == model.fingerprint()["head"]
    return INGEST_HEAD if same and INGEST_HEAD in set(store.head_versions()["name"]) else None


def _save(args, store, model, shift, interventions, report) -> dict[str, Any]:
    store.check_model(model.fingerprint())
    weights, bias = shift.head(interventions)
    actions = " ".join(i.spec() for i in interventions)
    note = args.note or f"sarm shift: {shift.target_spec} vs {shift.complement_spec}; {actions}"
    head = store.save_head(
        args.name or _default_name(args, interventions),
        weights,
        bias,
        parent=_parent(args, store, model),
        note=note,
        metrics=report.to_metrics(),
    )
    return {"name": head.name, "parent": head.parent, "store": str(store.path)}


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _result(args, store, shift, table, report, saved) -> dict[str, Any]:
    rows = table[list(FEATURE_COLUMNS)].to_dict(orient="records")
    return {
        "model": args.model,
        "store": str(store.path) if store is not None else None,
        "target": shift.target_spec,
        "complement": shift.complement_spec,
        "features": [{k: _finite(v) for k, v in r.items()} for r in rows],
        "report": report.to_dict(),
        "head_version": saved,
    }


# ---------------------------------------------------------------------- text


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _feature_lines(features: list[dict[str, Any]]) -> list[str]:
    head = f"  {'feature':>7} {'score':>8} {'mean T':>8} {'mean C':>8} {'freq x':>7} "
    head += f"{'salience':>8} {'weight':>8}  label"
    lines = [head]
    for f in features:
        lines.append(
            f"  {f['feature_id']:>7} {_num(f['score']):>8} {_num(f['mean_target']):>8} "
            f"{_num(f['mean_complement']):>8} {_num(f['freq_ratio'], '.1f'):>7} "
            f"{_num(f['salience']):>8} {_num(f['weight']):>8}  {f['label'] or ''}"
        )
    return lines


def _set_line(name: str, s: dict[str, Any]) -> str:
    change = s["accuracy_change"]
    pts = "" if change is None else f" ({100 * change:+.1f} pts, {s['n_flipped']} flipped)"
    return (
        f"  {name:<10} {s['n_examples']:>6} examples  mean |dr| {s['mean_abs_delta']:.4f}  "
        f"mean dr {s['mean_delta']:+.4f}  accuracy {_pct(s['accuracy_before'])} -> "
        f"{_pct(s['accuracy_after'])}{pts} over {s['n_pairs']} pairs"
    )


def _selectivity_text(report: dict[str, Any]) -> str:
    status = report["selectivity_status"]
    if status == "unchanged":
        return "selectivity: n/a (no reward changed)"
    if status == "complement_unchanged":
        return "selectivity: infinite (the complement did not change)"
    return f"selectivity: {report['selectivity']:.2f} (mean |dr| target / complement)"


def format_result(out: dict[str, Any]) -> str:
    report = out["report"]
    actions = " ".join(Intervention.from_dict(i).spec() for i in report["interventions"])
    lines = [f"target: {out['target']}   complement: {out['complement']}", "top features:"]
    lines += _feature_lines(out["features"])
    lines += [f"actions: {actions}", _selectivity_text(report)]
    lines += [_set_line(k, report[k]) for k in ("target", "complement", "overall")]
    saved = out["head_version"]
    if saved:
        parent = f" (parent {saved['parent']})" if saved["parent"] else ""
        lines.append(f"saved head version {saved['name']!r}{parent} in {saved['store']}")
    else:
        lines.append("no head version saved (--no-save)")
    return "\n".join(lines)
