"""Run the default's evidence pass: ``python -m workflows.default_sarm.evidence_run [--limit N]``.

Resumable (kill it and run it again); then package the parts with
``python -m workflows.default_sarm.evidence_asset``. See docs/explanations.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from sarm.checkpoints import load_sarm
from sarm.scoring import response_rows
from workflows.default_sarm.evidence import ORDER_SEED, evidence_pass
from workflows.default_sarm.store import audit_groups

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--limit", type=int, default=None, help="groups per audit split")
    parser.add_argument("--out", type=Path, default=None, help="parts folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    model = load_sarm("default")
    _, conversations = response_rows(audit_groups(args.limit))
    distinct = list({json.dumps(c, sort_keys=True): c for c in conversations}.values())
    order = np.random.default_rng(ORDER_SEED).permutation(len(distinct))
    logger.info("evidence pass over %d distinct conversations", len(distinct))
    evidence_pass(model, [distinct[i] for i in order], args.out)


if __name__ == "__main__":
    main()
