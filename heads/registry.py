"""The head registry: every head kind ``skill fit`` can train, found by name.

A head is registered by one decorator on its class, ``@register_head("name")``, in any module
of the ``skill.heads`` package: :func:`discover` imports each module of the package whose
source has a line starting with ``@register_head(`` (no list of modules to keep in step).

Two sorts of class are registered:
- a plain ``nn.Module`` (``mean``, ``concat``, ``late``, ``cvf``, ``temporal``), built as
  ``HEADS[name](dim=D, num_views=V, outputs=O, tokens=N, **options)``; its ``forward(x,
  mask)`` maps tokens ``(B, V, N, D)`` float32 and a view mask ``(B, V)`` bool (True = view
  present) to outputs ``(B, O)`` (O: the task's output width). Training wraps it in :class:`heads.trainer.NeuralHead`.
- a class that itself implements :class:`heads.interface.TrainableHead` (``lightgbm``).

A head whose first step is the mean over each view's tokens says so with the class attribute
``pools_tokens = True``; training then feeds it tokens pooled once, ``(B, V, 1, D)``. A head
may set ``multiview_dropout``, the view dropout it trains with by default when a fit has more
than one view (``FitConfig.view_dropout`` None), and ``default_lr``, its peak learning rate
when ``FitConfig.lr`` is None (:data:`DEFAULT_LR` where it sets none).
This module imports nothing heavy itself: importing the head modules (torch) happens on the
first look-up. :func:`declared_head_names` reads the names from the modules' source instead,
so that a command can check a head name before it loads torch.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path

HEADS: dict[str, type] = {}
# Peak AdamW learning rate of a head whose class sets no ``default_lr``.
DEFAULT_LR = 1e-3
_MARKER = "@register_head("
# The name in a registering line: @register_head("name") or @register_head('name').
_DECLARED = re.compile(r"""^@register_head\(\s*(["'])([^"']+)\1\s*\)""", re.MULTILINE)
_discovered = False


def register_head(name: str) -> Callable[[type], type]:
    """Class decorator: make a head buildable and trainable by ``name``."""

    def add(cls: type) -> type:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = cls
        return cls

    return add


def _head_modules() -> dict[str, str]:
    """Module name -> source, for each module of the ``skill.heads`` package that registers a
    head (a line starting with ``@register_head(``)."""
    folder = Path(__file__).parent  # the skill.heads package
    found = {}
    for module in pkgutil.iter_modules([str(folder)]):
        path = folder / f"{module.name}.py"
        if module.ispkg or not path.is_file():
            continue
        source = path.read_text()
        if any(line.startswith(_MARKER) for line in source.splitlines()):
            found[module.name] = source
    return found


def discover() -> None:
    """Import every module of ``skill.heads`` that registers a head (once)."""
    global _discovered
    if _discovered:
        return
    for name in _head_modules():
        importlib.import_module(f"{__package__}.{name}")
    _discovered = True


def declared_head_names() -> list[str]:
    """The names :func:`head_names` gives, sorted, read from the head modules' source (their
    ``@register_head("name")`` lines) without importing them, so without torch; heads
    registered at run time by other code are included."""
    declared = {
        m.group(2) for source in _head_modules().values() for m in _DECLARED.finditer(source)
    }
    return sorted(declared | set(HEADS))


def head_names() -> list[str]:
    """All registered heads, sorted (neural heads and ``lightgbm`` alike)."""
    discover()
    return sorted(HEADS)


def head_class(name: str) -> type:
    """The registered class of head ``name``; KeyError naming the choices for another name."""
    discover()
    if name not in HEADS:
        raise KeyError(f"unknown head {name!r}; choose from {', '.join(head_names())}")
    return HEADS[name]


def is_trainable(cls: type) -> bool:
    """Whether a registered class implements TrainableHead itself (else it is an nn.Module)."""
    return all(hasattr(cls, m) for m in ("fit", "predict_scores", "save", "load"))


def build_head(name: str, **kwargs):
    """Build the ``nn.Module`` of a registered neural head (``HEADS[name](**kwargs)``)."""
    cls = head_class(name)
    if is_trainable(cls):
        raise KeyError(f"head {name!r} is not a neural head (it has no nn.Module to build)")
    return cls(**kwargs)


def option_problem(name: str, options: dict) -> str | None:
    """What keeps ``options`` from rebuilding head ``name`` (unknown or missing option names),
    or None. A neural head takes its constructor's keyword arguments; a head that implements
    TrainableHead itself takes the names in its class attribute ``option_names`` (none if unset)."""
    cls = head_class(name)
    if is_trainable(cls):
        accepted, required = set(getattr(cls, "option_names", ())), set()
    else:
        params = list(inspect.signature(cls).parameters.values())
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return None
        named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        accepted = {p.name for p in named}
        required = {p.name for p in named if p.default is p.empty}
    unknown, missing = sorted(set(options) - accepted), sorted(required - set(options))
    if unknown:
        takes = ", ".join(sorted(accepted)) or "none"
        return f"unknown option {', '.join(unknown)} (head {name!r} takes {takes})"
    if missing:
        return f"missing option {', '.join(missing)} of head {name!r}"
    return None


def pools_tokens(name: str) -> bool:
    """Whether head ``name`` starts with the mean over each view's N tokens (its class sets
    ``pools_tokens = True``): then training may feed it that mean, computed once."""
    discover()
    return bool(getattr(HEADS.get(name), "pools_tokens", False))


def multiview_dropout(name: str) -> float:
    """The view dropout head ``name`` trains with by default when a fit has more than one
    view (its class attribute ``multiview_dropout``; 0 where it sets none)."""
    discover()
    return float(getattr(HEADS.get(name), "multiview_dropout", 0.0))


def default_lr(name: str) -> float:
    """The peak learning rate head ``name`` trains with when none is given (its class
    attribute ``default_lr``; :data:`DEFAULT_LR` where it sets none)."""
    discover()
    return float(getattr(HEADS.get(name), "default_lr", DEFAULT_LR))
