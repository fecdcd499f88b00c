"""Retrain the default's heads on its shipped SAE: ``python -m workflows.default_sarm.refit``.

Captures the public held-out sets when their captures are missing (the
splits' captures must exist: ``sarm build-default --from-scratch`` made them),
then runs the build's last step with the SAE that ships (so its feature
evidence stays valid): heads with and without the SAE error term, the choice
on dev, the report on every set, the artefacts. Rerun the bias audit
afterwards (``docs/bias_audit.md``): its report names the head.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workflows.default_sarm.build import assets_dir, build_from_cache
from workflows.default_sarm.capture import load_plan_backbone
from workflows.default_sarm.error_head import capture_heldout
from workflows.default_sarm.plan import FULL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="the default's directory (default: shipped)")
    args = parser.parse_args(argv)
    capture_heldout(FULL, load_plan_backbone(FULL))
    out = Path(args.out) if args.out else None
    manifest = build_from_cache(FULL, out, reuse_sae=True)
    shown = {k: manifest["error_head"][k] for k in ("chosen", "candidates")}
    print(json.dumps(shown, indent=1), file=sys.stderr)
    print(f"wrote {args.out or assets_dir()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
