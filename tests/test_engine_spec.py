"""RunSpec validation and the CLI's precedence (flags > YAML > defaults)."""

import argparse

import pytest

from services.cli.train import add_arguments, build_spec
from services.common.spec import RunSpec
from services.trainer.engine.errors import SpecError


def parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "values, field",
    [
        ({"method": "prefix"}, "method"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"dropout": 1.0}, "dropout"),
        ({"iters": 10, "warmup_steps": 10}, "warmup_steps"),
        ({"method": "qlora", "quant_bits": 3}, "quant_bits"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"packing": "maybe"}, "packing"),
        ({"target_modules": []}, "target_modules"),
    ],
)
def test_invalid_fields_are_named(values, field):
    with pytest.raises(SpecError) as err:
        RunSpec.from_dict(values)
    assert err.value.field == field
    assert field in str(err.value)


def test_unknown_field_suggests_the_closest():
    with pytest.raises(SpecError, match="did you mean 'learning_rate'"):
        RunSpec.from_dict({"learning_rat": 1e-4})


def test_loose_types_are_coerced():
    spec = RunSpec.from_dict(
        {"rank": "16", "packing": "false", "target_modules": "self_attn.q_proj, self_attn.v_proj"}
    )
    assert spec.rank == 16 and spec.packing is False
    assert spec.target_modules == ["self_attn.q_proj", "self_attn.v_proj"]
    assert spec.lora_scale == spec.alpha / 16


def test_cli_beats_yaml_beats_defaults(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: dora\nrank: 4\niters: 30\n")
    spec = build_spec(parse(["--config", str(config), "--rank", "32", "--set", "dropout=0.05"]))
    assert (spec.method, spec.rank, spec.iters, spec.dropout) == ("dora", 32, 30, 0.05)
    assert spec.learning_rate == RunSpec().learning_rate


def test_yaml_errors_name_the_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("method: lora\nrank: [1\n")
    with pytest.raises(SpecError, match=r"line \d"):
        RunSpec.from_yaml(config)
