"""Typed, documented configs for running a SARM over data (the ``sarm`` commands use them).

Each config is a dataclass in the style of sae-lens's ``SAEConfig``: every field
documents itself in ``field(metadata={"help": ...})`` (read it with
:func:`field_help`), ``Literal`` fields and numbers are checked in
``__post_init__`` with a ``ValueError`` that says what to give instead, and
``to_dict`` / ``from_dict`` round-trip through plain JSON values. The training
configs :class:`SAETrainConfig` and :class:`HeadTrainConfig` (used by
:mod:`sarm.train`) document their fields the same way.

This module imports nothing but the standard library, so reading a config (or
building the ``sarm`` command's parser from them) never pulls in torch.
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
        metadata={
            "help": "default (the shipped default SARM), smollm2-demo, a SARM checkpoint directory, or a Hugging Face hub id"
        }
    )
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda or cuda:N"})
    batch_size: int = field(
        default=8, metadata={"help": "at most this many responses per forward pass"}
    )
    max_batch_tokens: int | None = field(
        default=None,
        metadata={
            "help": "padded tokens per forward pass (rows x longest row); responses are "
            "length-sorted and batched within it (default: 2048 on CPU, 32768 on CUDA)"
        },
    )

    def __post_init__(self) -> None:
        self._check_text("model")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"ModelConfig.device must be a torch device such as cpu, cuda or cuda:1, "
                f"got {self.device!r}"
            )
        self._check_at_least("batch_size", 1)
        if self.max_batch_tokens is not None:
            self._check_at_least("max_batch_tokens", 1)

    def apply_batching(self, model):
        """``model`` with this config's padded-token budget (None keeps its device default)."""
        if self.max_batch_tokens is not None:
            model.max_batch_tokens = self.max_batch_tokens
        return model


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
    evidence_window: int = field(
        default=16,
        metadata={
            "help": "feature evidence kept from the same forward pass: tokens each side of "
            "a feature's peak (docs/explanations.md)"
        },
    )
    no_evidence: bool = field(
        default=False, metadata={"help": "keep no feature evidence (no windows, no explanations)"}
    )

    def __post_init__(self) -> None:
        self._check_at_least("chunk_size", 1)
        self._check_at_least("top_n", 1)
        self._check_at_least("evidence_window", 0)


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


# ----------------------------------------------------------------- training

SAEMode = Literal["tokens", "last"]
LRSchedule = Literal["constant", "cosine"]
BDecInit = Literal["mean", "zeros"]


@dataclass
class SAETrainConfig(Config):
    """How to train a TopK SAE (sizes, schedule, evaluation split).

    ``n_epochs`` sets the length for in-memory data; ``total_samples`` (if given)
    overrides it and is required for ``stream=True``. Warm-up and decay are
    fractions of the training steps; ``dead_feature_window`` is in steps.
    """

    d_sae: int = field(default=4096, metadata={"help": "SAE latents m"})
    k: int = field(default=32, metadata={"help": "active latents per token (TopK), at most d_sae"})
    mode: SAEMode = field(
        default="tokens",
        metadata={
            "help": "tokens: train on every token; last: only on the final end-of-turn token "
            "(the released SARM's sequence-level SAE)"
        },
    )
    n_epochs: float = field(
        default=4.0,
        metadata={"help": "passes over the activations (unless total_samples is given)"},
    )
    total_samples: int | None = field(
        default=None,
        metadata={"help": "train on exactly N samples instead of whole passes (stream needs it)"},
    )
    batch_size: int = field(default=256, metadata={"help": "activations per SAE training batch"})
    lr: float = field(default=5e-4, metadata={"help": "Adam learning rate"})
    lr_schedule: LRSchedule = field(
        default="constant",
        metadata={"help": "after warm-up: constant, or cosine from lr to lr * lr_end_factor"},
    )
    lr_warm_up_fraction: float = field(
        default=0.02, metadata={"help": "share of the steps warming the learning rate up linearly"}
    )
    lr_decay_fraction: float = field(
        default=0.2,
        metadata={"help": "share of the steps at the end decaying the learning rate linearly to 0"},
    )
    lr_end_factor: float = field(
        default=0.1,
        metadata={"help": "where the cosine schedule ends, as a fraction of lr, in (0, 1]"},
    )
    dead_feature_window: int = field(
        default=250,
        metadata={"help": "steps without firing after which a latent counts as dead (for AuxK)"},
    )
    aux_loss_coefficient: float = field(
        default=1.0, metadata={"help": "weight of the AuxK loss that revives dead latents"}
    )
    b_dec_init: BDecInit = field(
        default="mean",
        metadata={"help": "initial decoder bias (the SARM pre-bias): mean activation or zeros"},
    )
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "share of the activations held out for the metrics, in [0, 1)"},
    )
    max_eval_samples: int = field(
        default=20_000, metadata={"help": "at most this many held-out activations"}
    )
    stream: bool = field(
        default=False,
        metadata={"help": "one pass without keeping activations in memory (needs total_samples)"},
    )
    shuffle_buffer: int = field(
        default=32_768, metadata={"help": "activations shuffled together when streaming"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed of the initialisation, held-out split and batch order"}
    )
    device: str = field(default="cpu", metadata={"help": "torch device: cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        _check_choice("mode", self.mode, ("tokens", "last"))
        _check_choice("lr_schedule", self.lr_schedule, ("constant", "cosine"))
        _check_choice("b_dec_init", self.b_dec_init, ("mean", "zeros"))
        for name in ("d_sae", "k", "batch_size", "dead_feature_window", "shuffle_buffer"):
            _check_positive(name, getattr(self, name))
        _check_positive("n_epochs", self.n_epochs)
        _check_positive("lr", self.lr)
        if self.k > self.d_sae:
            raise ValueError(f"SAETrainConfig.k={self.k} exceeds d_sae={self.d_sae}")
        if self.total_samples is not None and self.total_samples < self.batch_size:
            raise ValueError(
                f"SAETrainConfig.total_samples={self.total_samples} is below one batch ({self.batch_size})"
            )
        for name in ("lr_warm_up_fraction", "lr_decay_fraction", "eval_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"SAETrainConfig.{name} must be in [0, 1), got {getattr(self, name)}"
                )
        if self.lr_warm_up_fraction + self.lr_decay_fraction >= 1.0:
            raise ValueError("SAETrainConfig: lr_warm_up_fraction + lr_decay_fraction must be < 1")
        if not 0.0 < self.lr_end_factor <= 1.0:
            raise ValueError(
                f"SAETrainConfig.lr_end_factor must be in (0, 1], got {self.lr_end_factor}"
            )
        if self.stream and self.total_samples is None:
            raise ValueError(
                "SAETrainConfig: stream=True needs total_samples (sae-lens fixes the length up front)"
            )
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(
                f"SAETrainConfig.device must be a torch device such as cpu, cuda or cuda:1, "
                f"got {self.device!r}"
            )


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"SAETrainConfig.{name} must be one of {choices}, got {value!r}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"SAETrainConfig.{name} must be > 0, got {value}")


HeadLRSchedule = Literal["constant", "cosine"]
HeadOptimizer = Literal["fista", "adam"]


@dataclass
class HeadTrainConfig(Config):
    """Optimiser, regularisation, validation split and early stopping for BT training.

    ``optimizer="fista"`` (default) takes one full-batch proximal-gradient step per
    epoch with step ``step_scale / L`` (``L`` estimated from the data, so features of
    any scale work); ``"adam"`` uses ``lr``, ``lr_schedule`` and ``batch_size``
    (``None`` = full batch). One epoch over 100k cached pairs is a single sparse
    gather, so full batch is the norm. ``bias=True``
    does not learn a bias (it cancels in Bradley-Terry) but centres the rewards
    of the training responses at 0.
    """

    optimizer: HeadOptimizer = field(
        default="fista",
        metadata={
            "help": "fista: full-batch proximal gradient (no learning rate, exact zeros "
            "under l1); adam: uses lr, lr_schedule and batch_size"
        },
    )
    step_scale: float = field(
        default=1.0, metadata={"help": "FISTA step as a multiple of 1/L (L estimated from data)"}
    )
    lr: float = field(default=1e-2, metadata={"help": "learning rate of the adam optimizer"})
    max_epochs: int = field(default=1000, metadata={"help": "most epochs to run"})
    patience: int = field(
        default=25, metadata={"help": "epochs without validation improvement before stopping"}
    )
    min_delta: float = field(
        default=1e-4, metadata={"help": "smallest validation-loss drop that counts as improvement"}
    )
    l1: float = field(default=0.0, metadata={"help": "L1 penalty weight, for a sparser head"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "L2 penalty weight (weight_decay / 2 * ||w||^2)"}
    )
    val_fraction: float = field(
        default=0.1,
        metadata={
            "help": "share of the pairs held out for early stopping, in [0, 1); "
            "pairs that share a response stay on one side"
        },
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "pairs per Adam step (None: full batch)"}
    )
    lr_schedule: HeadLRSchedule = field(
        default="cosine",
        metadata={"help": "Adam schedule over max_epochs: constant, or cosine down to lr / 100"},
    )
    bias: bool = field(
        default=False,
        metadata={"help": "add a bias that centres the training rewards at 0"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the validation split and the solver"})

    def __post_init__(self) -> None:
        if self.optimizer not in ("fista", "adam"):
            raise ValueError(
                f"HeadTrainConfig.optimizer must be 'fista' or 'adam', got {self.optimizer!r}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(
                f"HeadTrainConfig.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        for name in ("lr", "step_scale", "max_epochs", "patience"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HeadTrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("l1", "weight_decay", "min_delta"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"HeadTrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                f"HeadTrainConfig.val_fraction must be in [0, 1), got {self.val_fraction}"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(
                f"HeadTrainConfig.batch_size must be >= 1 or None, got {self.batch_size}"
            )
