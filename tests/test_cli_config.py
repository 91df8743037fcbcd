"""The CLI's options are derived from the stage configs: same names, types, defaults and
help, and settings that conflict are refused by the config before any work."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import typer

from skill.cli import app
from skill.cli_config import cli_options, field_docs, flag_names, help_text, in_flags
from skill.errors import ConfigError
from skill.pipeline.extract_config import ExtractConfig
from tests.extract_helpers import flat, invoke_cli

ROOT = Path(__file__).resolve().parents[1]


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
    names = flag_names(callback.config_options)
    for dotted, (field, doc) in fields_of(callback.config_class).items():
        # An excluded nested config (adapt's fit.lightgbm) excludes each of its fields.
        if any(dotted == e or dotted.startswith(e + ".") for e in callback.config_exclude):
            assert dotted not in by_path
            continue
        option = by_path[dotted]
        param = params[option.param]
        # the docstring's first paragraph, naming other settings as this command does
        assert param.help == in_flags(help_text(doc), names), dotted
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            assert param.required, dotted
        else:
            assert param.default == default_of(field, option.separator or ","), dotted
        if param.param_type_name == "option" and field.type in (bool, "bool"):
            assert param.is_flag and param.secondary_opts, dotted
    extra = set(params) - {option.param for option in callback.config_options}
    assert extra == {p.name for p in callback.extra_params}


def test_a_grid_is_the_sweep_commands_which_takes_every_other_fit_option():
    commands = typer.main.get_command(app).commands

    def flags(command: str) -> set[str]:
        params = commands[command].params
        return {flag for p in params if p.param_type_name == "option" for flag in p.opts}

    assert flags("fit") - flags("sweep") == {"--head", "--views", "--seed", "--name"}
    assert flags("sweep") - flags("fit") == {
        "--heads", "--view-sets", "--seeds", "--stores", "--sweep-name"
    }  # fmt: skip


def test_a_field_without_a_docstring_cannot_become_an_option():
    @dataclasses.dataclass
    class Undocumented:
        size: int = 1

    with pytest.raises(TypeError, match="has no docstring"):
        cli_options(Undocumented)


def test_stride_with_uniform_sampling_is_refused_as_a_conflict(tmp_path):
    with pytest.raises(ConfigError, match="--stride is the frame step inside a window"):
        ExtractConfig(manifest=tmp_path / "m", store=tmp_path / "s", stride=2)
    (tmp_path / "m.jsonl").write_text("")  # settings are refused before it is read
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


# ---- one vocabulary ------------------------------------------------------------------------
def leaf_commands(group=None, prefix="") -> dict:
    """Every command of the app by its words (`import features`)."""
    group = group or typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.update(leaf_commands(command, f"{prefix}{name} "))
        else:
            found[prefix + name] = command
    return found


def options_by_flag() -> dict[str, dict]:
    """--flag -> {command: its option}."""
    found: dict[str, dict] = {}
    for name, command in leaf_commands().items():
        for param in command.params:
            if param.param_type_name == "option":
                long = next(o for o in param.opts if o.startswith("--"))
                found.setdefault(long, {})[name] = param
    return found


def test_one_concept_has_one_flag_and_one_default():
    by_flag = options_by_flag()
    assert {param.default for param in by_flag["--device"].values()} == {"auto"}
    assert set(by_flag["--device"]) >= {"extract", "adapt", "fit", "sweep", "predict"}
    assert len({param.default for param in by_flag["--threads"].values()}) == 1
    # manifests are read with --manifest-format; --format is only ever an output format
    assert set(by_flag["--manifest-format"]) == {"extract", "adapt", "import features"}
    assert set(by_flag["--format"]) == {"predict", "export"}
    # where a command writes is --out (-o), a store being written --store (-s)
    assert "--out-dir" not in by_flag
    for name, param in by_flag["--out"].items():
        assert "-o" in param.opts, name
    for name, param in by_flag["--store"].items():
        assert "-s" in param.opts, name


def test_flags_without_a_value_show_no_metavar():
    for name, command in leaf_commands().items():
        for param in command.params:
            if getattr(param, "is_flag", False):
                record = param.get_help_record(command.context_class(command))
                assert "<" not in record[0], (name, record[0])


def readme_shared_options() -> list[tuple[set[str], str, set[str]]]:
    """The README's table of shared options: (flags, default cell, commands) per row."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Options shared by several commands", 1)[1].split("\n\n")
    table = next(block for block in section if block.startswith("| option |"))
    rows = []
    for line in table.splitlines()[2:]:
        flags, _meaning, default, commands = (cell.strip() for cell in line.strip("|").split("|"))
        named = set(re.findall(r"`(--[a-z-]+)`", flags))
        used = {c.split(" (")[0].strip() for c in commands.split(", ")}
        rows.append((named, default, used))
    return rows


def test_the_readme_table_lists_every_shared_option_with_its_commands_and_default():
    rows = readme_shared_options()
    for flag, commands in options_by_flag().items():
        used = set(commands) - {"sweep"}  # sweep takes fit's options (the table says so)
        if len(used) < 2:
            continue
        row = next((row for row in rows if flag in row[0]), None)
        assert row is not None, f"{flag} ({', '.join(sorted(used))}) is not in the table"
        assert used <= row[2], f"{flag}: {sorted(used - row[2])} missing from its row"
        defaults = {param.default for param in commands.values()}
        if len(defaults) == 1 and not isinstance(next(iter(defaults)), bool | type(None)):
            default = next(iter(defaults))
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert shown in row[1], f"{flag}: default {shown} not in {row[1]!r}"
    known = {"--quiet", "--debug", "--progress-every"}.union(
        *(set(p.opts) | set(p.secondary_opts) for c in leaf_commands().values() for p in c.params)
    )
    for flags, _default, _commands in rows:
        assert flags <= known, flags - known
