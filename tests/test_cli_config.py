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
    assert {"synth", "extract", "fit", "sweep", "predict", "demo"} <= set(config_commands())


def fields_of(config_cls, prefix=()) -> dict[str, tuple]:
    """Dotted field name -> (field, its docstring), nested configs flattened."""
    import typing

    docs, hints, out = field_docs(config_cls), typing.get_type_hints(config_cls), {}
    for field in dataclasses.fields(config_cls):
        path = (*prefix, field.name)
        if dataclasses.is_dataclass(hints[field.name]):
            out.update(fields_of(hints[field.name], path))
        else:
            out[".".join(path)] = (field, docs[field.name])
    return out


def default_of(field, separator):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return separator.join(map(str, field.default_factory()))
    return None


@pytest.mark.parametrize("name", sorted(config_commands()))
def test_every_field_is_an_option_with_its_default_and_help(name):
    callback = config_commands()[name]
    command = typer.main.get_command(app).commands[name]
    params = {p.name: p for p in command.params}
    by_path = {option.dotted: option for option in callback.config_options}
    for dotted, (field, doc) in fields_of(callback.config_class).items():
        if dotted in callback.config_exclude:
            assert dotted not in by_path
            continue
        option = by_path[dotted]
        param = params[option.param]
        assert param.help == help_text(doc), dotted
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert param.required, dotted
        else:
            assert param.default == default_of(field, option.separator or ","), dotted
        if isinstance(param, click.Option) and field.type in (bool, "bool"):
            assert param.is_flag and param.secondary_opts, dotted
    extra = set(params) - {option.param for option in callback.config_options}
    assert extra == {p.name for p in callback.extra_params}


def test_fit_and_the_sweep_command_share_the_grid_options():
    commands = typer.main.get_command(app).commands
    fit = {p.name: p for p in commands["fit"].params}
    sweep = {p.name: p for p in commands["sweep"].params}
    for grid in ("heads", "view_sets", "seeds", "stores"):
        assert fit[grid].default == sweep[grid].default and fit[grid].help == sweep[grid].help


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
