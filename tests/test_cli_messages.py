"""The words a user meets on the command line: help that reads as prose (no markup, no
Python names, no "None =", defaults and summaries whole) and errors that name the flags of
the command the user typed, for every setting a config refuses."""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from skill.cli import app
from skill.cli_config import summary

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
FILE_SUFFIXES = {"json", "jsonl", "png", "csv", "md", "npy", "h5", "zarr", "safetensors", "pt",
                 "txt", "mp4", "lock"}  # fmt: skip
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
DOTTED = re.compile(r"\b[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+(?:\(\))?")


def commands(group=None, path=()) -> dict[tuple[str, ...], object]:
    """Every command and group of the app, by its words (`("import", "features")`)."""
    group = group or typer.main.get_command(app)
    found = {path: group}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            found.update(commands(command, (*path, name)))
        else:
            found[(*path, name)] = command
    return found


def flags_of(command) -> set[str]:
    return {name for p in command.params for name in (*p.opts, *p.secondary_opts)}


ALL_FLAGS = {"--help"}.union(*(flags_of(c) for c in commands().values()))


def help_of(words: tuple[str, ...]) -> str:
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    return " ".join(text.split())


def config_field_names(words: tuple[str, ...]) -> set[str]:
    """The field names of the config a command is derived from (nested configs too)."""
    if not words:
        return set()
    callback = next(
        (
            c.callback
            for c in app.registered_commands
            if (c.name or c.callback.__name__) == words[-1]
        ),
        None,
    )
    options = getattr(callback, "config_options", [])
    return {part for option in options for part in option.path}


# ---- help ----------------------------------------------------------------------------------
@pytest.mark.parametrize("words", sorted(commands()), ids=lambda w: " ".join(w) or "skill")
def test_help_reads_as_prose(words):
    text = help_of(words)
    assert "`" not in text, "markup in the help"
    assert not re.search(r"\bNone\b", text), "a Python None in the help"
    assert "<bool>" not in text
    python_names = [
        name for name in DOTTED.findall(text)
        if name.rsplit(".", 1)[-1].lower() not in FILE_SUFFIXES and not name.endswith(".acc")
    ]  # fmt: skip
    assert not python_names, python_names
    fields = [f for f in config_field_names(words) if "_" in f and re.search(rf"\b{f}\b", text)]
    assert not fields, f"field names in the help: {fields}"
    unknown = set(FLAG.findall(text)) - ALL_FLAGS
    assert not unknown, f"flags no command has: {unknown}"


@pytest.mark.parametrize("words", sorted(commands()), ids=lambda w: " ".join(w) or "skill")
def test_help_shows_every_default_whole(words):
    text = flat(help_of(words)).replace(", ", ",")  # a long comma list may break after a comma
    for param in commands()[words].params:
        if not getattr(param, "show_default", False) or param.default in (None, ""):
            continue
        if getattr(param, "is_flag", False) and not param.secondary_opts:
            continue  # a plain switch (--debug) shows no default
        if isinstance(param.default, bool):
            shown = (param.opts if param.default else param.secondary_opts)[0].lstrip("-")
        else:
            shown = str(param.default)
        assert f"[default: {shown}]" in text or f"[default: {shown};" in text, param.name


def test_every_unset_option_says_what_happens_instead():
    """An option without a default value says what happens when it is not given."""
    for words, command in commands().items():
        for param in command.params:
            if param.default is None and not param.required and param.help:
                assert "default" in param.help.lower(), (words, param.name)


def test_command_lists_show_each_summary_whole():
    for words, group in commands().items():
        if not hasattr(group, "commands"):
            continue
        text = flat(help_of(words))
        for name, command in group.commands.items():
            line = summary(command.help)
            assert line.endswith(".") and not line.endswith("..."), (name, line)
            assert f"{name} {line}" in text, name


def test_help_to_a_narrow_pipe_breaks_no_name_at_a_hyphen():
    text = help_of(("extract",))
    assert "timesformer-base-k600" in text  # the default, on one line
    for line in text.splitlines():
        assert not re.search(r"\w-$", line.rstrip()), line


# ---- errors name the command's flags -------------------------------------------------------
def fake_store(folder: Path) -> Path:
    """Enough of a store for the checks made before any store is opened: its zarr.json."""
    store = folder / "s.zarr"
    store.mkdir()
    attributes = {"skill": {"format_version": 4}, "views": ["ego", "exo1", "exo2"]}
    (store / "zarr.json").write_text(json.dumps({"attributes": attributes}))
    return store


# Each config's refusals, reached through its command: {command: [arguments after it]}.
# S is a store, M a manifest, D a scratch folder.
REFUSALS: dict[str, list[list[str]]] = {
    "fit": [
        ["S", "--steps", "3", "--epochs", "3"],
        ["S", "--epochs", "3", "--min-steps", "5"],
        ["S", "--patience", "3", "--patience-frac", "0.5"],
        ["S", "--steps", "0", "--lr", "0", "--dropout", "2", "--hidden", "-1"],
        ["S", "--head", "nosuch"],
        ["S", "--monitor", "accuracy"],
        ["S", "--name", "a/b"],
        ["S", "--device", "gpu"],
    ],
    "sweep": [
        ["S", "--heads", ","],
        ["S", "--seeds", "0,one"],
        ["S", "--sweep-name", ".hidden"],
        ["S", "--stores", "S,S"],
        ["S", "--epochs", "0"],
    ],
    "predict": [
        ["S", "--run", "D"],
        ["S", "--run", "D", "--format", "egoexo4d"],
        ["S", "--run", "D", "--out", "p.csv", "--format", "xml"],
        ["S", "--run", "D", "--out", "p.csv", "--aggregate", "scenario"],
        ["S", "--run", "D", "--out", "p.csv", "--unpredictable", "skip"],
        ["S", "--run", "D", "--out", "p.csv", "--batch-size", "0"],
    ],
    "extract": [
        ["M", "--store", "D/x.zarr", "--tokens", "pixels", "--time-embedding", "cubic"],
        ["M", "--store", "D/x.zarr", "--frames", "0", "--workers", "-1", "--seed", "-1"],
        ["M", "--store", "D/x.zarr", "--sampling", "random", "--snap", "near"],
        ["M", "--store", "D/x.zarr", "--timeout", "0", "--limit", "0"],
        ["M", "--store", "D/x.zarr", "--decoders", "opencv", "--decode-device", "gpu"],
        ["M", "--store", "D/x.zarr", "--decode-device", "cuda", "--decoders", "pyav"],
        ["M", "--store", "D/x.zarr", "--stride", "2"],
        ["M", "--store", "D/x.zarr", "--sampling", "segments", "--frames", "6"],
        ["M", "--store", "D/x.zarr", "--task", "ranking"],
        ["M", "--store", "D/x.zarr", "--clip-every", "0", "--clip-every-unit", "hours"],
        ["M", "--store", "D/x.zarr", "--clip-every", "2"],
        ["M", "--store", "D/x.zarr", "--sampling", "stride"],
        ["M", "--store", "D/x.zarr", "--sampling", "stride", "--clip-every", "2.5"],
        ["M", "--store", "D/x.zarr", "--sampling", "stride", "--clip-every", "2", "--jitter"],
        ["M", "--store", "D/x.zarr", "--pairs", "D/train.txt"],
    ],
    "adapt": [
        ["M", "--out", "D/a", "--preset", "skillformer-huge"],
        ["M", "--out", "D/a", "--steps", "5", "--epochs", "2"],
        ["M", "--out", "D/a", "--steps", "0"],
        ["M", "--out", "D/a", "--tokens", "pixels", "--time-embedding", "cubic", "--clips", "0"],
        ["M", "--out", "D/a", "--lr", "0", "--warmup-frac", "1", "--codec", "lz4"],
        ["M", "--out", "D/a", "--monitor", "accuracy", "--prefetch", "-1"],
        ["M", "--out", "D/a", "--stop-after-epochs", "0"],
        ["M", "--out", "D/a", "--lora-r", "0", "--grad-accum", "0", "--codec", "lz4"],
        ["M", "--out", "D/a", "--prefetch", "-1"],
        ["M", "--out", "D/a", "--head", "nosuch"],
        ["M", "--out", "D/a", "--head", "lightgbm"],
        ["M", "--out", "D/a", "--sampling", "uniform", "--stride", "2"],
        ["M", "--out", "D/a", "--sampling", "sequence"],
        ["M", "--out", "D/a", "--head", "seqformer"],
    ],
    "export": [["S", "D/out", "--format", "zip"]],
    "import features": [
        ["D", "--store", "D/x.zarr", "--clips", "0"],
        ["D", "--store", "D/x.zarr", "--tokens-per-clip", "0"],
    ],
    "demo": [["--takes", "12"], ["--out", "D/demo"]],
    "synth": [
        ["D/synth", "--size", "15", "--frames", "4", "--fps", "0"],
        ["D/synth", "--exo-views", "5", "--participants", "10", "--takes", "4"],
        ["D/synth", "--kind", "rank"],
        ["D/synth", "--kind", "order", "--procedure-steps", "9"],
        ["D/synth", "--kind", "order", "--procedure-steps", "4", "--frames", "62", "--swaps", "3"],
        ["D/synth", "--kind", "moments", "--frames", "100"],
    ],
}
# The config modules whose refusals REFUSALS must reach, and the config class in each.
CONFIGS = {
    "heads/config.py": ("FitConfig", "PredictConfig", "SweepConfig"),
    "pipeline/extract_config.py": ("ExtractConfig",),
    "adapt/config.py": ("AdaptConfig",),
    "synth/config.py": ("SynthConfig", "validate_config"),
    "interop/export.py": ("ExportConfig",),
    "interop/import_features.py": ("ImportFeaturesConfig",),
    "demo.py": ("DemoConfig",),
}
SAFETY_NETS = {("pipeline/extract_config.py", "_derive_sampling", "str(err)")}
"""Refusals no setting reaches (another check refuses the setting first)."""


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refusals")
    (folder / "m.jsonl").write_text("")  # settings are refused before the manifest is read
    (folder / "demo").mkdir()
    (folder / "demo" / "mine.txt").write_text("not a demo folder")
    return {"S": str(fake_store(folder)), "M": str(folder / "m.jsonl"), "D": str(folder)}


def arguments(words: list[str], places: dict[str, str]) -> list[str]:
    """`words` with S, M and D (alone, in a comma list, or before a /) made real paths."""

    def real(part: str) -> str:
        head, slash, tail = part.partition("/")
        return places[head] + slash + tail if head in places else part

    return [",".join(real(part) for part in word.split(",")) for word in words]


def refusal_cases():
    return [(command, args) for command, cases in REFUSALS.items() for args in cases]


@pytest.mark.parametrize(("command", "args"), refusal_cases(), ids=lambda x: str(x))
def test_a_refused_setting_is_named_by_the_commands_flag(command, args, places):
    words = tuple(command.split())
    result = runner.invoke(app, [*words, *arguments(args, places)])
    message = flat(result.output)
    assert result.exit_code == 2, message
    assert message.startswith("error: ") and "Traceback" not in message
    named = set(FLAG.findall(message))
    assert named, f"no flag named: {message}"
    assert named <= flags_of(commands()[words]), f"{named - flags_of(commands()[words])}"
    fields = [f for f in config_field_names(words) if "_" in f and re.search(rf"\b{f}\b", message)]
    assert not fields, f"field names in the message: {fields}"


def refusal_sites() -> list[tuple[str, str, int, int, str]]:
    """(file, function, first line, last line, source) of every `raise ConfigError(...)` and
    `problems.append(...)` in the configs and the functions they call."""
    sites = []
    for name, owners in CONFIGS.items():
        source = (ROOT / name).read_text()
        tree = ast.parse(source)
        for owner in tree.body:
            if getattr(owner, "name", None) not in owners and not (
                name == "heads/config.py" and isinstance(owner, ast.FunctionDef)
            ):
                continue
            functions = [owner] if isinstance(owner, ast.FunctionDef) else [
                node for node in owner.body if isinstance(node, ast.FunctionDef)
            ]  # fmt: skip
            for function in functions:
                for node in ast.walk(function):
                    text = ast.get_source_segment(source, node) or ""
                    if (
                        isinstance(node, ast.Raise)
                        and "ConfigError(" in text
                        or (isinstance(node, ast.Expr) and text.startswith("problems.append("))
                    ):
                        sites.append((name, function.name, node.lineno, node.end_lineno, text))
    return sites


# Traces every case to prove REFUSALS complete; the default run checks each message (above).
@pytest.mark.slow
def test_every_refusal_of_every_config_is_reached_by_a_case(places):
    """REFUSALS is complete: running its cases executes every refusal the configs make (so
    the test above checks the message of each)."""
    files = {str(ROOT / name): name for name in CONFIGS}
    ran: set[tuple[str, int]] = set()

    def trace(frame, event, arg):
        name = files.get(frame.f_code.co_filename)
        if name is None:
            return None
        if event == "line":
            ran.add((name, frame.f_lineno))
        return trace

    sys.settrace(trace)
    try:
        for command, args in refusal_cases():
            runner.invoke(app, [*command.split(), *arguments(args, places)])
    finally:
        sys.settrace(None)
    missed = [
        f"{name}:{first} ({function}): {text.splitlines()[0]}"
        for name, function, first, last, text in refusal_sites()
        if not any((name, line) in ran for line in range(first, last + 1))
        and not any(net[:2] == (name, function) and net[2] in text for net in SAFETY_NETS)
    ]
    assert not missed, "refusals no case reaches:\n" + "\n".join(missed)
