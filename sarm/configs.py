"""Typed, documented configs for running a SARM over data (the ``sarm`` commands use them).

Each config is a dataclass in the style of sae-lens's ``SAEConfig``: every field
documents itself in ``field(metadata={"help": ...})`` (read it with
:func:`field_help`), ``Literal`` fields and numbers are checked in
``__post_init__`` with a ``ValueError`` that says what to give instead, and
``to_dict`` / ``from_dict`` round-trip through plain JSON values. The training
configs :class:`sarm.train.sae.SAETrainConfig` and
:class:`sarm.train.head.HeadTrainConfig` document their fields the same way.

This module imports nothing but the standard library, so reading a config never
pulls in torch.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

# sarm.shift ranks features by these (its ORDERS and DIRECTIONS are these names).
Direction = Literal["target", "complement", "both"]
OrderBy = Literal["score", "mean_diff", "freq_ratio", "selectivity", "salience", "contribution"]

_DEVICE = re.compile(r"[a-z][a-z_]*(:\d+)?")
C = TypeVar("C", bound="Config")


def field_help(cls: type) -> dict[str, str]:
    """Each field's documentation (``metadata["help"]``) of the dataclass ``cls``."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


@functools.cache
def literal_choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The allowed values of each ``Literal``-typed field of the dataclass ``cls``."""
    hints = get_type_hints(cls)
    return {
        f.name: get_args(hints[f.name])
        for f in dataclasses.fields(cls)
        if get_origin(hints[f.name]) is Literal
    }


class Config:
    """Shared behaviour of the configs: ``Literal`` checks and the dict round trip."""

    def _check_literals(self) -> None:
        for name, choices in literal_choices(type(self)).items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(
                    f"{type(self).__name__}.{name} must be one of {list(choices)}, got {value!r}"
                )

    def _check_at_least(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(
                f"{type(self).__name__}.{name} must be an integer >= {minimum}, got {value!r}"
            )

    def _check_text(self, name: str) -> None:
        value = getattr(self, name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"{type(self).__name__}.{name} must be a non-empty string, got {value!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """The config from ``to_dict()``'s output; unknown or missing keys are an error."""
        fields = dataclasses.fields(cls)
        names = {f.name for f in fields}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__}.from_dict: unknown keys {unknown}; the fields are {sorted(names)}"
            )
        missing = sorted(
            f.name
            for f in fields
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        )
        if missing:
            raise ValueError(f"{cls.__name__}.from_dict: missing required keys {missing}")
        return cls(**data)


@dataclass
class ModelConfig(Config):
    """Which SARM to run, on which device, and how many responses per forward pass."""

    model: str = field(
        metadata={"help": "smollm2-demo, a SARM checkpoint directory, or a Hugging Face hub id"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda or cuda:N"})
    batch_size: int = field(default=8, metadata={"help": "responses per forward pass"})

    def __post_init__(self) -> None:
        self._check_text("model")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"ModelConfig.device must be a torch device such as cpu, cuda or cuda:1, "
                f"got {self.device!r}"
            )
        self._check_at_least("batch_size", 1)


@dataclass
class DataConfig(Config):
    """Which preference data to read, how much of it, and what to do with malformed rows."""

    data: str = field(
        metadata={
            "help": "preference data: a .jsonl/.json/.parquet file, a saved Hugging Face "
            "dataset directory, or demo:train, demo:test or demo:all"
        }
    )
    limit: int | None = field(
        default=None, metadata={"help": "use only the first N preference groups"}
    )
    skip_malformed: bool = field(
        default=False,
        metadata={"help": "skip (and count) malformed rows instead of stopping at the first"},
    )

    def __post_init__(self) -> None:
        self._check_text("data")
        if self.limit is not None:
            self._check_at_least("limit", 0)


@dataclass
class IndexConfig(Config):
    """How a dataset is written into a feature store."""

    chunk_size: int = field(
        default=256,
        metadata={"help": "responses per committed chunk (an interrupted run resumes there)"},
    )
    top_n: int = field(default=20, metadata={"help": "top-activating examples kept per feature"})

    def __post_init__(self) -> None:
        self._check_at_least("chunk_size", 1)
        self._check_at_least("top_n", 1)


@dataclass
class ShiftConfig(Config):
    """A preference shift: the two sets of responses and how to rank the features between them.

    Set specs are ``subset:NAME[,NAME]``, ``subset:!NAME``,
    ``role:chosen|rejected|single``, ``feature:ID[,ID]``, ``label:TEXT``, ``all``,
    ``rest`` (complement only), ``file:PATH`` or ``demo:train|test|all``, joined
    with ``&`` (see :class:`sarm.shift.SetSpec`).
    """

    target: str = field(metadata={"help": "target set spec, e.g. subset:refusal"})
    complement: str = field(
        default="rest",
        metadata={"help": "complement set spec; rest is every response outside the target"},
    )
    top: int = field(default=10, metadata={"help": "features to rank, show and edit"})
    direction: Direction = field(
        default="target",
        metadata={
            "help": "keep features stronger on the target, on the complement, or both "
            "(by mean |activation|)"
        },
    )
    order_by: OrderBy = field(
        default="score",
        metadata={"help": "ranking column (score: |mean difference| x consistency)"},
    )

    def __post_init__(self) -> None:
        self._check_text("target")
        self._check_text("complement")
        self._check_at_least("top", 1)
        self._check_literals()
