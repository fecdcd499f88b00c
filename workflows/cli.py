"""The ``sarm`` command line.

Each command is a module of :mod:`workflows.commands` (``train-sae`` is
``train_sae``) with a ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``. :data:`COMMANDS` lists them with their one-line help.

:func:`main` is the one error boundary: every exception a command raises is
printed as one line, ``sarm COMMAND: error: ...``, with exit status 2 for bad
input (arguments, files, configs, data rows: :class:`sarm.errors.InputError`,
``ValueError``, a missing file) and 1 for a failure at run time (a busy store,
a full disk, a non-finite result, anything unexpected). ``--debug`` adds the
traceback. Library warnings are printed as ``sarm COMMAND: warning: ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import traceback
import warnings
from collections.abc import Collection, Iterator, Sequence
from types import ModuleType

from feature_store.errors import StoreError
from sarm.errors import ComputeError, check_utf8, is_input_error

EXIT_RUNTIME = 1
EXIT_INPUT = 2

COMMANDS = {
    "audit-bias": "bias audit: rewarded surface properties, the features paying them, a fix",
    "build-default": "build the default SARM's store (or, --from-scratch, the whole default)",
    "build-demo": "build the template-trained demo SARM (SmolLM2-135M + SAE + head) and its store",
    "eval": "evaluate a SARM on preference data",
    "explain": "explain every feature of a feature store and score each explanation",
    "index": "index a dataset into a feature store (rewards, latents, feature statistics)",
    "score": "score a response and list its top feature contributions",
    "serve": "serve a SARM over HTTP as the reward of an RLHF run (OpenRLHF, TRL)",
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
        formatter_class=CommandListFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_line in COMMANDS.items():
        command = sub.add_parser(name, help=help_line)
        if commands is None or name in commands:
            module = command_module(name)
            command.description = module.DESCRIPTION
            module.add_arguments(command)
            # also accepted after the command; SUPPRESS keeps a top-level --debug
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS)
            command.set_defaults(func=module.run)
    return parser


DEBUG_HELP = "on an error, also print the traceback"


class CommandListFormatter(argparse.HelpFormatter):
    """argparse's formatter, counting the indent of listed commands when aligning help.

    argparse measures sub-commands without their extra indent, so a long command
    name (``build-default``) would push its help onto the next line.
    """

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is argparse.SUPPRESS:
            return
        for sub in getattr(action, "_get_subactions", list)():
            width = len(self._format_action_invocation(sub)) + self._current_indent
            self._action_max_length = max(self._action_max_length, width + self._indent_increment)


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
        return EXIT_INPUT
    with warnings_as_lines(f"sarm {args.command}"):
        try:
            check_text_arguments(args)
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print(f"sarm {args.command}: interrupted", file=sys.stderr)
            return 130
        except Exception as exc:
            if args.debug:
                traceback.print_exc()
            print(f"sarm {args.command}: error: {error_line(exc)}", file=sys.stderr)
            return exit_code(exc)


def exit_code(exc: BaseException) -> int:
    """2 for bad input the user can fix, 1 for a failure at run time."""
    return EXIT_INPUT if is_input_error(exc) else EXIT_RUNTIME


def error_line(exc: BaseException) -> str:
    """The exception as one line; unexpected kinds are named, with where to look."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    if is_input_error(exc) or isinstance(exc, (ComputeError, StoreError, OSError)):
        return text or type(exc).__name__
    if isinstance(exc, MemoryError) or "out of memory" in text.lower():
        return f"out of memory ({text or type(exc).__name__}); try a smaller --batch-size"
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{detail} (an unexpected failure; rerun with --debug for the traceback)"


def check_text_arguments(args: argparse.Namespace) -> None:
    """Every string argument must be UTF-8: argv bytes that are not arrive as surrogates."""
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str):
                check_utf8(item, "--" + name.replace("_", "-"))


@contextlib.contextmanager
def warnings_as_lines(prefix: str) -> Iterator[None]:
    """Show library warnings as ``PREFIX: warning: MESSAGE`` (no file, line or source)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"{prefix}: warning: {text}", file=file or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


if __name__ == "__main__":
    raise SystemExit(main())
