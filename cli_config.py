"""CLI options derived from a stage's config dataclass, so the two cannot drift.

Each field becomes one option: `--field-name` (or the flag given in `flags`), the field's
type, its default, and the first paragraph of its docstring as the help text. Fields named in
`arguments` are positional, a list field is one option of joined items, and a field whose type
is itself a config dataclass (a sweep's `fit`) contributes its own fields (dotted names like
`fit.name` address them in `flags` and `exclude`). The command receives the built config,
whose `__post_init__` refuses bad settings, after `check` has run the cheap checks. This is the
one place that turns a setting's `--field-name` into what the command calls it (`--out` for
`out_csv` in predict), in help and errors. Help is click's plain layout, never cut; nothing
here imports torch, so `skill --help` stays instant::

    @app.command()
    @from_config(ExtractConfig, arguments=("manifest",), short={"store": "-s"})
    def extract(cfg: ExtractConfig) -> None: ...
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import typing
from collections.abc import Callable
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from skill.errors import ConfigError


def field_docs(config_cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal right after the field); a config that
    extends another keeps the docstrings of the fields it does not declare again."""
    docs: dict[str, str] = {}
    for cls in reversed(config_cls.__mro__):
        if "__dataclass_fields__" in vars(cls):
            docs.update(_own_field_docs(cls))
    return docs


def _own_field_docs(config_cls: type) -> dict[str, str]:
    """The docstrings of the fields declared in ``config_cls``'s own body."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(config_cls)))
    body = tree.body[0].body
    docs = {}
    for node, following in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(following.value.value)
    return docs


def help_text(doc: str) -> str:
    """The first paragraph of a field's docstring, on one line."""
    return " ".join(doc.split("\n\n")[0].split())


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
"""A setting named in a docstring or message: `--min-steps`."""


def field_flag(name: str) -> str:
    """How docstrings and messages name the field `name`: `--name-with-dashes`."""
    return "--" + name.replace("_", "-")


def flag_names(options: list[CliOption]) -> dict[str, str]:
    """`--field-name` -> what the command calls that field, where the two differ: its flag
    (`--out-csv` -> `--out`), or a positional argument's name (`--store` -> `STORE`)."""
    names = {}
    for option in options:
        shown = option.metavar if option.positional else option.flag
        if shown != field_flag(option.path[-1]):
            names[field_flag(option.path[-1])] = shown
    return names


def in_flags(text: str, names: dict[str, str]) -> str:
    """`text` with every `--field-name` written as the command calls it (`flag_names`)."""
    return _FLAG.sub(lambda match: names.get(match.group(0), match.group(0)), text)


@dataclasses.dataclass(frozen=True)
class CliOption:
    """One config field as the CLI shows it."""

    path: tuple[str, ...]
    """Field names from the command's config down to this field (`("fit", "lr")`)."""
    flag: str
    """`--name`; for a positional argument, the name shown."""
    annotation: Any
    """The type the CLI parses (`str` for a list field)."""
    default: Any
    help: str
    positional: bool
    separator: str | None
    """A list field's separator; None for other fields."""

    @property
    def param(self) -> str:
        """The Python parameter name of the option (unique within a command)."""
        return "__".join(self.path)

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def metavar(self) -> str:
        """A positional argument's name in the usage line and in messages: `STORE`."""
        return self.path[-1].upper()


def cli_options(
    config_cls: type,
    *,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    exclude: tuple[str, ...] = (),
    separators: dict[str, str] | None = None,
    types: dict[str, Any] | None = None,
) -> list[CliOption]:
    """The options `from_config` gives a command, in field order (arguments first), each help
    text naming settings as this command does (`in_flags`)."""
    options = _collect_options(
        config_cls, arguments=arguments, flags=flags or {}, exclude=exclude,
        separators=separators or {}, types=types or {}, prefix=(),
    )  # fmt: skip
    names = flag_names(options)
    return [dataclasses.replace(option, help=in_flags(option.help, names)) for option in options]


def _collect_options(
    config_cls: type,
    *,
    arguments: tuple[str, ...],
    flags: dict[str, str],
    exclude: tuple[str, ...],
    separators: dict[str, str],
    types: dict[str, Any],
    prefix: tuple[str, ...],
) -> list[CliOption]:
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    options = []
    for f in dataclasses.fields(config_cls):
        path = (*prefix, f.name)
        dotted = ".".join(path)
        if dotted in exclude or not f.init:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            options += _collect_options(
                hint, arguments=arguments, flags=flags, exclude=exclude,
                separators=separators, types=types, prefix=path,
            )  # fmt: skip
            continue
        if f.name not in docs:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no docstring (the CLI help)")
        options.append(_option(f, path, hint, docs[f.name], arguments, flags, separators, types))
    return sorted(options, key=lambda option: not option.positional)


def _option(f, path, hint, doc, arguments, flags, separators, types) -> CliOption:
    dotted = ".".join(path)
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = ...
    separator = None
    if typing.get_origin(hint) is list:
        separator = separators.get(dotted, separators.get(f.name, ","))
        hint = str
        default = default if default is ... else separator.join(map(str, default))
    return CliOption(
        path=path,
        flag=flags.get(dotted, flags.get(f.name, "--" + f.name.replace("_", "-"))),
        annotation=types.get(dotted, types.get(f.name, hint)),
        default=default,
        help=help_text(doc),
        positional=f.name in arguments,
        separator=separator,
    )


def config_from_options(
    config_cls: type,
    options: list[CliOption],
    values: dict[str, Any],
    convert: dict[str, Callable] | None = None,
):
    """Build `config_cls` (and the configs nested in it) from the parsed option values."""
    convert = convert or {}
    tree: dict = {}
    for option in options:
        value = values[option.param]
        if option.separator is not None and isinstance(value, str):
            value = [part.strip() for part in value.split(option.separator) if part.strip()]
        if option.dotted in convert and value is not None:
            value = convert[option.dotted](value)
        node = tree
        for name in option.path[:-1]:
            node = node.setdefault(name, {})
        node[option.path[-1]] = value
    return _build(config_cls, tree)


def _build(config_cls: type, tree: dict):
    hints = typing.get_type_hints(config_cls)
    kwargs = {
        name: _build(hints[name], value) if isinstance(value, dict) else value
        for name, value in tree.items()
    }
    return config_cls(**kwargs)


def config_parameters(options: list[CliOption], short: dict[str, str]) -> list[inspect.Parameter]:
    """typer parameters for `options`."""
    return [_parameter(option, short.get(option.dotted)) for option in options]


def from_config(
    config_cls: type,
    *,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    short: dict[str, str] | None = None,
    exclude: tuple[str, ...] = (),
    separators: dict[str, str] | None = None,
    types: dict[str, Any] | None = None,
    convert: dict[str, Callable] | None = None,
    extra: list[inspect.Parameter] | None = None,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> Callable:
    """Decorator: the command takes `config_cls`'s fields as options and gets the config
    built from them (plus any `extra` typer parameters, passed by keyword). `types` and
    `convert` let a field take another form on the command line (a file of take ids read
    into a list, say). `check` gets the parsed values by dotted field name (and the extras
    by name) before the config is built, to refuse cheap mistakes before heavy imports. A
    ConfigError raised while the command runs names the settings by this command's flags."""
    options = cli_options(
        config_cls, arguments=arguments, flags=flags, exclude=exclude,
        separators=separators, types=types,
    )  # fmt: skip
    names = flag_names(options)
    extra = extra or []

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**values):
            extras = {p.name: values.pop(p.name) for p in extra}
            try:
                if check is not None:
                    by_field = {option.dotted: values[option.param] for option in options}
                    check({**by_field, **extras})
                cfg = config_from_options(config_cls, options, values, convert)
                return command(cfg, **extras)
            except ConfigError as err:
                if len(err.args) == 1 and isinstance(err.args[0], str):
                    err.args = (in_flags(err.args[0], names),)
                raise

        run.__signature__ = inspect.Signature([*config_parameters(options, short or {}), *extra])
        run.__annotations__ = {}  # typer reads the generated signature's annotations
        run.config_class = config_cls
        run.config_options = options
        run.config_exclude = exclude
        run.extra_params = extra
        return run

    return decorate


def _parameter(option: CliOption, short: str | None) -> inspect.Parameter:
    if option.positional:
        default = typer.Argument(
            option.default,
            help=option.help,
            show_default=False,
            metavar=option.metavar,
        )
    else:
        names = [option.flag, *([short] if short else [])]
        if option.annotation is bool:
            names = [f"{option.flag}/--no-{option.flag[2:]}"]
        default = typer.Option(option.default, *names, help=option.help)
    return inspect.Parameter(
        option.param,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=option.annotation,
    )


# ---- help --------------------------------------------------------------------------------
_NO_BREAK = "\u2011"  # a non-breaking hyphen: the wrapper never breaks a line there
_BREAK = "\u2002 "  # a marked space after each comma, removed again: a list breaks there


class HelpFormatter(TyperCommand.context_class.formatter_class):  # typer's own click
    """click's help layout, except that a name is never broken at a hyphen: a default such as
    timesformer-base-k600 or a value such as skillformer-windows stays whole on its line, and a
    comma list too long for a line breaks after a comma, not inside a name."""

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _NO_BREAK))

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = [(term, _unbreakable_names(text)) for term, text in rows]
        super().write_dl(rows, col_max, col_spacing)

    def getvalue(self) -> str:
        return re.sub("\u2002 ?", "", super().getvalue()).replace(_NO_BREAK, "-")


def _unbreakable_names(text: str) -> str:
    return text.replace("-", _NO_BREAK).replace(",", "," + _BREAK)


class HelpContext(TyperCommand.context_class):
    formatter_class = HelpFormatter


def summary(help: str | None) -> str:
    """A command's summary in a list of commands: the first paragraph of its help, whole, on
    one line (click would cut it at 45 characters, rich keep its line breaks)."""
    return " ".join(inspect.cleandoc(help or "").split("\n\n")[0].split())


class HelpCommand(TyperCommand):
    context_class = HelpContext

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help)


class HelpGroup(TyperGroup):
    context_class = HelpContext

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or summary(self.help)


class Typer(typer.Typer):
    """A typer app with plain help: click's layout, which a log, a pipe and a narrow terminal
    all show whole (rich's panels cut defaults and help at 80 columns and show `<bool>` for
    flags); see HelpFormatter and summary."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=HelpGroup, rich_markup_mode=None, **settings)

    def command(self, name: str | None = None, *, cls: type | None = None, **settings: Any):
        return super().command(name, cls=cls or HelpCommand, **settings)
