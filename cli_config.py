"""CLI options derived from a stage's config dataclass, so the two cannot drift.

Each field becomes one option: `--field-name` (or the flag given in `flags`), the field's
type, its default, and the first paragraph of its docstring as the help text. Fields named
in `arguments` are positional; fields without a default are required. The command body
receives the built config, whose `__post_init__` refuses bad or conflicting settings.

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

    field: str
    flag: str
    """`--name`, or the argument's name for a positional one."""
    annotation: Any
    default: Any
    help: str
    positional: bool
    required: bool


def cli_options(
    config_cls: type,
    *,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    exclude: tuple[str, ...] = (),
) -> list[CliOption]:
    """The options `from_config` gives a command, in field order (arguments first)."""
    flags = flags or {}
    docs = field_docs(config_cls)
    hints = typing.get_type_hints(config_cls)
    options = []
    for f in dataclasses.fields(config_cls):
        if f.name in exclude or not f.init:
            continue
        if f.name not in docs:
            raise TypeError(f"{config_cls.__name__}.{f.name} has no docstring (the CLI help)")
        has_default = f.default is not dataclasses.MISSING
        if f.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{config_cls.__name__}.{f.name}: CLI options need plain defaults")
        options.append(
            CliOption(
                field=f.name,
                flag=flags.get(f.name, "--" + f.name.replace("_", "-")),
                annotation=hints[f.name],
                default=f.default if has_default else ...,
                help=help_text(docs[f.name]),
                positional=f.name in arguments,
                required=not has_default,
            )
        )
    return sorted(options, key=lambda option: not option.positional)


def from_config(
    config_cls: type,
    *,
    arguments: tuple[str, ...] = (),
    flags: dict[str, str] | None = None,
    short: dict[str, str] | None = None,
    exclude: tuple[str, ...] = (),
    extra: list[inspect.Parameter] | None = None,
) -> Callable:
    """Decorator: the command takes `config_cls`'s fields as options and gets the config
    built from them (plus any `extra` typer parameters, passed by keyword)."""
    short = short or {}
    options = cli_options(config_cls, arguments=arguments, flags=flags, exclude=exclude)
    extra = extra or []

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def run(**values):
            extras = {p.name: values.pop(p.name) for p in extra}
            return command(config_cls(**values), **extras)

        params = [_parameter(option, short.get(option.field)) for option in options]
        run.__signature__ = inspect.Signature([*params, *extra])
        run.__annotations__ = {}  # typer reads the generated signature's annotations
        run.config_class = config_cls
        run.config_options = options
        run.extra_params = extra
        return run

    return decorate


def _parameter(option: CliOption, short: str | None) -> inspect.Parameter:
    if option.positional:
        default = typer.Argument(
            option.default, help=option.help, show_default=False, metavar=option.field.upper()
        )
    else:
        names = [option.flag, *([short] if short else [])]
        if option.annotation is bool:
            names = [f"{option.flag}/--no-{option.flag[2:]}"]
        default = typer.Option(option.default, *names, help=option.help)
    return inspect.Parameter(
        option.field,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=option.annotation,
    )
