"""CLI options derived from a stage's config dataclass, so the two cannot drift.

Each field becomes one option: `--field-name` (or the flag given in `flags`), the field's
type, its default, and the first paragraph of its docstring as the help text. Fields named
in `arguments` are positional; fields without a default are required. A list field is one
option holding the items joined by its separator (`,` unless `separators` says otherwise).
A field whose type is itself a config dataclass (a sweep's `fit`) contributes its own fields,
named by their own names (dotted names like `fit.name` address them in `flags` and
`exclude`). The command receives the built config, whose `__post_init__` refuses bad or
conflicting settings.

    @app.command()
    @from_config(ExtractConfig, arguments=("manifest",), short={"store": "-s"})
    def extract(cfg: ExtractConfig) -> None: ...

Nothing here imports torch: config modules are light, so `skill --help` stays instant.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import typing
from collections.abc import Callable
from typing import Any

import typer


def field_docs(config_cls: type) -> dict[str, str]:
    """Field name -> its docstring (the string literal right after the field)."""
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


def cli_options(
    config_cls: type,
    *,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    exclude: tuple[str, ...] = (),
    separators: dict[str, str] | None = None,
    types: dict[str, Any] | None = None,
    _prefix: tuple[str, ...] = (),
) -> list[CliOption]:
    """The options `from_config` gives a command, in field order (arguments first)."""
    flags, separators, types = flags or {}, separators or {}, types or {}
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    options = []
    for f in dataclasses.fields(config_cls):
        path = (*_prefix, f.name)
        dotted = ".".join(path)
        if dotted in exclude or not f.init:
            continue
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            options += cli_options(
                hint, arguments=arguments, flags=flags, exclude=exclude,
                separators=separators, types=types, _prefix=path,
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
) -> Callable:
    """Decorator: the command takes `config_cls`'s fields as options and gets the config
    built from them (plus any `extra` typer parameters, passed by keyword). `types` and
    `convert` let a field take another form on the command line (a file of take ids read
    into a list, say)."""
    options = cli_options(
        config_cls, arguments=arguments, flags=flags, exclude=exclude,
        separators=separators, types=types,
    )  # fmt: skip
    extra = extra or []

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**values):
            extras = {p.name: values.pop(p.name) for p in extra}
            return command(config_from_options(config_cls, options, values, convert), **extras)

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
            metavar=option.path[-1].upper(),
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
