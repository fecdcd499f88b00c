"""Command-line flags generated from documented config dataclasses.

A :class:`ConfigFlags` names a config class and which of its fields a command
exposes; each flag's spelling (``--field-name``), type, choices, default and help
text come from the field itself (``metadata["help"]``, see :mod:`sarm.configs`),
so every command that shares a config shares its flags word for word.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


@dataclass
class OutputConfig:
    """How a command reports: JSON or text, with or without progress bars."""

    json: bool = field(default=False, metadata={"help": "print the result as JSON instead of text"})
    quiet: bool = field(default=False, metadata={"help": "no progress bars"})


def json_text(value: Any) -> str:
    """``value`` as strict JSON for ``--json`` output: NaN and inf become null, never ``NaN``."""
    from sarm.export import json_safe  # imports torch: only once a command has run

    return json.dumps(json_safe(value), indent=2, allow_nan=False)


@dataclass(frozen=True)
class ConfigFlags:
    """The flags of one config class in one command.

    ``only`` picks the fields that become flags (default: all, in field order);
    ``defaults`` overrides a default for this command (a field without a default
    is a required flag unless it gets one here); ``names`` respells a flag whose
    name differs from ``--field-name``.
    """

    config: type
    only: tuple[str, ...] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {f.name for f in dataclasses.fields(self.config)}
        for given in (self.only or (), self.defaults, self.names):
            unknown = sorted(set(given) - known)
            if unknown:
                raise ValueError(f"{self.config.__name__} has no fields {unknown}")

    def fields(self) -> list[dataclasses.Field]:
        by_name = {f.name: f for f in dataclasses.fields(self.config)}
        return [by_name[name] for name in self.only] if self.only else list(by_name.values())

    def flag(self, name: str) -> str:
        return self.names.get(name, "--" + name.replace("_", "-"))

    def dest(self, name: str) -> str:
        return self.flag(name).removeprefix("--").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add one flag per selected field to ``parser``."""
        hints = get_type_hints(self.config)
        for f in self.fields():
            parser.add_argument(self.flag(f.name), **self._argument(f, hints[f.name]))

    def from_args(self, args: argparse.Namespace) -> Any:
        """The config from the parsed flags (fields without a flag keep their defaults)."""
        return self.config(**{f.name: getattr(args, self.dest(f.name)) for f in self.fields()})

    def _argument(self, f: dataclasses.Field, hint: Any) -> dict[str, Any]:
        default = self.defaults.get(f.name, _default(f))
        required = default is dataclasses.MISSING
        text = f.metadata.get("help", "").replace("%", "%%")
        if not required and default is not None and default is not False:
            text += f" (default {default})"
        if hint is bool:
            if default is not False:
                raise TypeError(
                    f"{self.config.__name__}.{f.name}: a bool flag must default to False"
                )
            return {"action": "store_true", "help": text}
        kind = _value_type(hint)
        argument = {"help": text, "required": required}
        if not required:
            argument["default"] = default
        if get_origin(kind) is Literal:
            return argument | {"choices": get_args(kind)}
        return argument if kind is str else argument | {"type": kind}


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _value_type(hint: Any) -> Any:
    """``int`` for ``int | None``; a ``Literal``, ``int``, ``float`` or ``str`` as it is."""
    if get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return _value_type(rest[0])
    if hint in (int, float, str) or get_origin(hint) is Literal:
        return hint
    raise TypeError(f"no command-line flag for a field of type {hint!r}")
