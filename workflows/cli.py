"""The ``sarm`` command line.

Each command is a module of :mod:`workflows.commands` (``train-sae`` is
``train_sae``) with a ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``. :data:`COMMANDS` lists them with their one-line help.
Errors the user can fix (bad arguments or data, a missing file, a store
problem) are printed as ``sarm COMMAND: error: ...`` with exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence
from types import ModuleType

from feature_store.errors import StoreError

COMMANDS = {
    "build-demo": "build the embedded demo SARM (SmolLM2-135M + SAE + head) and its store",
    "eval": "evaluate a SARM on preference data",
    "index": "index a dataset into a feature store (rewards, latents, feature statistics)",
    "score": "score a response and list its top feature contributions",
    "shift": "preference shift: edit the features behind a preference and measure selectivity",
    "train-head": "train the reward head (Bradley-Terry) over a SARM's pooled SAE latents",
    "train-sae": "train a TopK SAE (sae-lens) on a backbone's layer-L activations",
}


def command_module(name: str) -> ModuleType:
    # Imported on demand: command modules import torch (seconds), `sarm --help` needs none.
    return importlib.import_module(f"workflows.commands.{name.replace('-', '_')}")


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``sarm`` parser; only ``commands`` (default: all) get their arguments."""
    parser = argparse.ArgumentParser(
        prog="sarm",
        description="Score, attribute, train, index and steer sparse-autoencoder reward models.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        command = sub.add_parser(name, help=help_line)
        if commands is None or name in commands:
            module = command_module(name)
            command.description = module.DESCRIPTION
            module.add_arguments(command)
            command.set_defaults(func=module.run)
    return parser


def requested_command(argv: Sequence[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = requested_command(argv)
    parser = build_parser([command] if command else [])
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, StoreError) as exc:
        print(f"sarm {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
