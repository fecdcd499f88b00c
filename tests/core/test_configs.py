"""Documented configs (sarm.configs, the training configs) and the CLI flags made from them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import pkgutil
from typing import get_args

import pytest

import workflows.commands as package
from sarm.configs import (
    DataConfig,
    Direction,
    IndexConfig,
    ModelConfig,
    OrderBy,
    ShiftConfig,
    field_help,
    literal_choices,
)
from sarm.shift import DIRECTIONS, ORDERS
from sarm.train.head import HeadTrainConfig
from sarm.train.sae import SAETrainConfig
from workflows.cli import COMMANDS, build_parser, command_module, main, requested_command
from workflows.commands.flags import ConfigFlags, OutputConfig

CONFIGS = [ModelConfig, DataConfig, IndexConfig, ShiftConfig, SAETrainConfig, HeadTrainConfig]
# One valid instance of each, with non-default values where there are any.
EXAMPLES = [
    ModelConfig(model="smollm2-demo", device="cuda:1", batch_size=3),
    DataConfig(data="demo:test", limit=0, skip_malformed=True),
    IndexConfig(chunk_size=7, top_n=2),
    ShiftConfig("subset:refusal", complement="all", top=3, direction="both", order_by="salience"),
    SAETrainConfig(
        d_sae=64, k=4, mode="last", total_samples=512, stream=True, lr_schedule="cosine"
    ),
    HeadTrainConfig(optimizer="adam", batch_size=16, lr_schedule="constant", bias=True, l1=1e-3),
]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_documented(cls):
    docs = field_help(cls)
    assert list(docs) == [f.name for f in dataclasses.fields(cls)]
    assert all(len(text) > 8 for text in docs.values()), docs


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda c: type(c).__name__)
def test_to_dict_from_dict_round_trip(config):
    data = json.loads(json.dumps(config.to_dict()))
    assert data == dataclasses.asdict(config)
    assert type(config).from_dict(data) == config


@pytest.mark.parametrize("config", EXAMPLES, ids=lambda c: type(c).__name__)
def test_from_dict_names_unknown_keys(config):
    data = config.to_dict() | {"bogus": 1, "d_saee": 2}
    with pytest.raises(ValueError, match=r"unknown keys \['bogus', 'd_saee'\]"):
        type(config).from_dict(data)


def test_from_dict_names_missing_required_keys():
    with pytest.raises(ValueError, match=r"missing required keys \['model'\]"):
        ModelConfig.from_dict({"device": "cpu"})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ShiftConfig("subset:a", direction="up"), r"ShiftConfig.direction must be one of"),
        (lambda: ShiftConfig("subset:a", order_by="size"), r"order_by must be one of \['score'"),
        (lambda: SAETrainConfig(mode="first"), r"SAETrainConfig.mode must be one of"),
        (lambda: SAETrainConfig(lr_schedule="linear"), r"lr_schedule must be one of"),
        (lambda: HeadTrainConfig(optimizer="sgd"), r"optimizer must be 'fista' or 'adam'"),
    ],
)
def test_bad_literal_values_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ModelConfig("m", batch_size=0), r"ModelConfig.batch_size must be an integer >= 1"),
        (lambda: ModelConfig("m", device="gpu 0"), r"ModelConfig.device must be a torch device"),
        (lambda: ModelConfig(""), r"ModelConfig.model must be a non-empty string"),
        (lambda: DataConfig("demo:test", limit=-1), r"DataConfig.limit must be an integer >= 0"),
        (lambda: DataConfig("demo:test", limit=True), r"DataConfig.limit must be an integer"),
        (lambda: IndexConfig(chunk_size=0), r"IndexConfig.chunk_size must be an integer >= 1"),
        (lambda: IndexConfig(top_n=1.5), r"IndexConfig.top_n must be an integer >= 1"),
        (lambda: ShiftConfig("subset:a", top=0), r"ShiftConfig.top must be an integer >= 1"),
        (lambda: ShiftConfig(" "), r"ShiftConfig.target must be a non-empty string"),
        (lambda: SAETrainConfig(d_sae=16, k=32), r"k=32 exceeds d_sae=16"),
        (lambda: SAETrainConfig(eval_fraction=1.0), r"eval_fraction must be in \[0, 1\)"),
        (lambda: HeadTrainConfig(val_fraction=1.5), r"val_fraction must be in \[0, 1\)"),
        (lambda: HeadTrainConfig(l1=-1.0), r"l1 must be >= 0"),
    ],
)
def test_out_of_range_numbers_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_literal_choices_match_the_library():
    assert get_args(OrderBy) == ORDERS and get_args(Direction) == DIRECTIONS
    assert literal_choices(ShiftConfig) == {"direction": DIRECTIONS, "order_by": ORDERS}
    assert literal_choices(SAETrainConfig)["mode"] == ("tokens", "last")


# --------------------------------------------------------------------------- the flags


def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.option_strings}


def test_flags_follow_the_fields():
    parser = argparse.ArgumentParser()
    ConfigFlags(SAETrainConfig, names={"n_epochs": "--epochs"}).add_to(parser)
    actions = _actions(parser)
    fields = dataclasses.fields(SAETrainConfig)
    assert set(actions) == {"help", "epochs"} | ({f.name for f in fields} - {"n_epochs"})
    for f in fields:
        action = actions["epochs" if f.name == "n_epochs" else f.name]
        flag = "--epochs" if f.name == "n_epochs" else "--" + f.name.replace("_", "-")
        assert action.option_strings == [flag]
        assert action.default == f.default and not action.required
        assert action.help.startswith(f.metadata["help"].replace("%", "%%"))
    assert actions["mode"].choices == ("tokens", "last")
    assert actions["total_samples"].type is int and actions["lr"].type is float
    assert isinstance(actions["stream"], argparse._StoreTrueAction)
    assert actions["d_sae"].help.endswith("(default 4096)")
    assert "(default" not in actions["total_samples"].help


def test_required_fields_and_command_defaults():
    parser = argparse.ArgumentParser()
    ConfigFlags(ModelConfig).add_to(parser)
    ConfigFlags(DataConfig, defaults={"data": None}).add_to(parser)
    actions = _actions(parser)
    assert actions["model"].required and not actions["data"].required
    assert actions["data"].default is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--data", "x"])  # --model is required


def test_from_args_builds_and_checks_the_config():
    parser = argparse.ArgumentParser()
    flags = ConfigFlags(HeadTrainConfig, only=("optimizer", "val_fraction", "bias"))
    flags.add_to(parser)
    cfg = flags.from_args(parser.parse_args(["--optimizer", "adam", "--bias"]))
    assert cfg == HeadTrainConfig(optimizer="adam", bias=True)
    with pytest.raises(ValueError, match="val_fraction must be in"):
        flags.from_args(parser.parse_args(["--val-fraction", "1.5"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--optimizer", "sgd"])


def test_config_flags_reject_unknown_fields():
    with pytest.raises(ValueError, match=r"ModelConfig has no fields \['modle'\]"):
        ConfigFlags(ModelConfig, only=("modle",))


SAE_FLAGS = ["mode", "d_sae", "k", "total_samples", "batch_size", "lr", "lr_schedule"]
SAE_FLAGS += ["eval_fraction", "stream", "seed", "device"]
HEAD_FLAGS = ["l1", "weight_decay", "optimizer", "lr", "max_epochs", "patience", "val_fraction"]
HEAD_FLAGS += ["bias", "seed"]
# The config fields each command exposes, by their flag's dest (None: every field).
EXPOSED = {
    "score": [(ModelConfig, ["model", "device"]), (OutputConfig, ["json"])],
    "eval": [(ModelConfig, None), (DataConfig, None), (OutputConfig, ["json"])],
    "index": [
        (ModelConfig, None),
        (DataConfig, None),
        (IndexConfig, None),
        (OutputConfig, ["quiet"]),
    ],
    "shift": [(ModelConfig, None), (ShiftConfig, None), (OutputConfig, ["json"])],
    "train-sae": [
        (SAETrainConfig, [*SAE_FLAGS, "epochs"]),
        (DataConfig, None),
        (OutputConfig, None),
    ],
    "train-head": [
        (HeadTrainConfig, HEAD_FLAGS),
        (ModelConfig, None),
        (DataConfig, None),
        (OutputConfig, None),
    ],
    "build-demo": [(OutputConfig, None)],
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(EXPOSED))
def test_command_flags_come_from_the_configs(command):
    parser = _subparsers(build_parser([command]))[command]
    actions = _actions(parser)
    for cls, names in EXPOSED[command]:
        docs = field_help(cls)
        for dest in names or docs:
            field_name = "n_epochs" if dest == "epochs" else dest
            assert actions[dest].help.startswith(docs[field_name]), (command, dest)


def test_every_command_module_is_registered():
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"flags"}
    assert {name.replace("-", "_") for name in COMMANDS} == modules
    assert all(callable(command_module(name).run) for name in COMMANDS)


def test_only_the_requested_command_gets_its_arguments(capsys):
    parsers = _subparsers(build_parser(["eval"]))
    assert "data" in _actions(parsers["eval"]) and set(_actions(parsers["score"])) == {"help"}
    assert requested_command(["-v", "train-sae", "--data", "x"]) == "train-sae"
    assert requested_command(["--help"]) is None
    with pytest.raises(SystemExit):
        main(["--help"])
    listing = capsys.readouterr().out
    assert all(f"    {name} " in listing for name in COMMANDS)


def test_a_config_error_is_a_clean_cli_error(capsys):
    assert main(["eval", "--model", "m", "--data", "demo:test", "--batch-size", "0"]) == 2
    assert "sarm eval: error: ModelConfig.batch_size must be" in capsys.readouterr().err
