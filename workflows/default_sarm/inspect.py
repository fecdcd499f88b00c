"""The default's strongest features and where they fire, from the shipped audit latents.

``python -m workflows.default_sarm.inspect [--features 5] [--examples 8]`` prints,
for the features of largest ``|w|``, the share of their top audit-set responses
that come from one source and one category, and the top responses themselves
(no backbone pass: the audit latents ship with the weights).
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sarm.cachedir import shipped_default_dir
from sarm.head import Head
from sarm.train.selection import top_rows
from workflows.default_sarm.audit_parts import AUDIT_FILE, AuditRows, conversation_key
from workflows.default_sarm.data import load_split
from workflows.default_sarm.store import AUDIT_SPLITS


@dataclass
class AuditText:
    """Per audit row: its source, category, role (chosen / rejected) and texts."""

    source: list[str]
    category: list[str]
    role: list[str]
    prompt: list[str]
    response: list[str]


def audit_text(parts: AuditRows) -> AuditText:
    row_of = {key: i for i, key in enumerate(parts.key)}
    n = len(parts)
    out = AuditText(["?"] * n, ["?"] * n, ["?"] * n, [""] * n, [""] * n)
    for name in AUDIT_SPLITS:
        for group in load_split(name).groups:
            for role, _, text in group.responses():
                row = row_of.get(conversation_key(group.conversation(text)))
                if row is None or out.source[row] != "?":
                    continue
                out.source[row] = str(group.meta.get("source"))
                out.category[row] = str(group.meta.get("category"))
                out.role[row], out.prompt[row], out.response[row] = role, group.prompt_text, text
    return out


def feature_report(
    parts: AuditRows, text: AuditText, head: Head, n_features: int, n_examples: int
) -> list[dict]:
    """The ``n_features`` features of largest |w| with their top ``n_examples`` responses."""
    values, indices = torch.from_numpy(parts.values), torch.from_numpy(parts.indices)
    order = np.argsort(-np.abs(head.weights), kind="stable")[:n_features]
    out = []
    for f in order.tolist():
        rows = top_rows(values, indices, f, n_examples)
        sources = Counter(text.source[r] for r in rows)
        categories = Counter(text.category[r] for r in rows)
        out.append(
            {
                "feature": f,
                "weight": float(head.weights[f]),
                "n_active": int((indices == f).sum()),
                "top_source": sources.most_common(1)[0] if rows.size else None,
                "top_category": categories.most_common(1)[0] if rows.size else None,
                "chosen_share": float(np.mean([text.role[r] == "chosen" for r in rows]))
                if rows.size
                else None,
                "examples": [
                    {
                        "activation": float(values[r][indices[r] == f][0]),
                        "source": text.source[r],
                        "role": text.role[r],
                        "prompt": text.prompt[r][:120],
                        "response": text.response[r][:200],
                    }
                    for r in rows.tolist()
                ],
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--features", type=int, default=5)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    root = args.model_dir or shipped_default_dir()
    head = Head.load(root / "head.safetensors")
    parts = AuditRows.read(root / AUDIT_FILE, head)
    report = feature_report(parts, audit_text(parts), head, args.features, args.examples)
    for entry in report:
        src, cat = entry["top_source"], entry["top_category"]
        print(
            f"\nfeature {entry['feature']}  w={entry['weight']:+.3f}  active on "
            f"{entry['n_active']} audit responses; top {len(entry['examples'])}: "
            f"{src[1]} from {src[0]}, {cat[1]} {cat[0]}, chosen share {entry['chosen_share']:.2f}"
        )
        for ex in entry["examples"]:
            response = ex["response"].replace("\n", " ")
            print(f"  {ex['activation']:6.2f} [{ex['source']}/{ex['role']}] {response[:150]}")


if __name__ == "__main__":
    main()
