"""The layering rule of docs/architecture.md, checked on every run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location(
        "check_layers", ROOT / "scripts" / "check_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_layers", module)
    spec.loader.exec_module(module)
    return module


def test_imports_only_go_down():
    check = _checker()
    assert check.layer_violations(check.import_graph()) == []


def test_no_import_cycles():
    check = _checker()
    assert check.find_cycles(check.import_graph()) == []


def test_checker_sees_a_violation_and_a_cycle():
    check = _checker()
    graph = {"sarm.a": {"feature_store.b"}, "feature_store.b": {"sarm.a"}, "app.c": {"sarm.a"}}
    assert check.layer_violations(graph) == [
        "sarm.a imports feature_store.b: a lower layer imports a higher one"
    ]
    assert check.find_cycles(graph) == [["feature_store.b", "sarm.a"]]
