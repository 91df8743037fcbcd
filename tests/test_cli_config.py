"""The CLI's options are derived from the stage configs: same names, types, defaults and
help, and settings that conflict are refused by the config before any work."""

from __future__ import annotations

import dataclasses

import click
import pytest
import typer

from skill.cli import app
from skill.cli_config import cli_options, field_docs, help_text
from skill.errors import ConfigError
from skill.pipeline.extract_config import ExtractConfig
from tests.extract_helpers import flat, invoke_cli


def config_commands() -> dict[str, object]:
    """Every command whose options come from a config dataclass."""
    return {
        (c.name or c.callback.__name__): c.callback
        for c in app.registered_commands
        if hasattr(c.callback, "config_class")
    }


def test_the_stage_commands_are_derived_from_their_configs():
    assert {"extract"} <= set(config_commands())


@pytest.mark.parametrize("name", sorted(config_commands()))
def test_every_field_is_an_option_with_its_default_and_help(name):
    callback = config_commands()[name]
    config_cls = callback.config_class
    command = typer.main.get_command(app).commands[name]
    params = {p.name: p for p in command.params}
    docs = field_docs(config_cls)
    for field in dataclasses.fields(config_cls):
        param = params[field.name]
        assert param.help == help_text(docs[field.name]), field.name
        if field.default is dataclasses.MISSING:
            assert param.required, field.name
        else:
            assert param.default == field.default, field.name
        if isinstance(param, click.Option) and field.type in (bool, "bool"):
            assert param.is_flag and param.secondary_opts, field.name
    extra = set(params) - {f.name for f in dataclasses.fields(config_cls)}
    assert extra == {p.name for p in getattr(callback, "extra_params", [])}


def test_a_field_without_a_docstring_cannot_become_an_option():
    @dataclasses.dataclass
    class Undocumented:
        size: int = 1

    with pytest.raises(TypeError, match="has no docstring"):
        cli_options(Undocumented)


def test_stride_with_uniform_sampling_is_refused_as_a_conflict(tmp_path):
    with pytest.raises(ConfigError, match="--stride is the frame step inside a window"):
        ExtractConfig(manifest=tmp_path / "m", store=tmp_path / "s", stride=2)
    code, output = invoke_cli(
        "extract", str(tmp_path / "m.jsonl"), "--store", str(tmp_path / "s"), "--stride", "2"
    )
    assert code == 2 and "uniform sampling has neither" in flat(output)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    ("strategy", "stride", "window", "segment"),
    [
        ("windows", None, 4, 1),
        ("windows", 2, 2, 1),
        ("segments", None, 4, 4),
        ("segments", 3, 4, 3),
    ],
)
def test_stride_means_the_step_inside_a_window_or_a_segment(
    tmp_path, strategy, stride, window, segment
):
    cfg = ExtractConfig(
        manifest=tmp_path / "m", store=tmp_path / "s", strategy=strategy, stride=stride, frames=8
    )
    assert (cfg.sampling.stride, cfg.sampling.segment_stride) == (window, segment)
