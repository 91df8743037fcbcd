"""The head registry: every head kind ``skill fit`` can train, found by name.

A head file registers its class with one decorator, ``@register_head("name")``, and
``heads/__init__.py`` lists each head file beside the name it registers (``HEAD_FILES``). The
files import torch, so the registry imports them on its first look-up (:func:`discover`);
the list alone answers :func:`declared_head_names` and :func:`heads_in_order`, so that a
command can check a head name before it loads torch.

Two sorts of class are registered:
- a plain ``nn.Module`` (``mean``, ``concat``, ``late``, ``cvf``, ``temporal``). Its
  constructor declares the sizes of the store it uses, among :data:`SIZES` (``dim`` D,
  ``num_views`` V, ``outputs`` O: the task's output width, ``tokens`` N, ``view_names``),
  and its options (``hidden``, ``dropout``, ...); it is built with those it declares
  (:meth:`HeadSpec.build`). Its ``forward(x, mask)`` maps tokens ``(B, V, N, D)`` float32 and
  a view mask ``(B, V)`` bool (True = view present) to outputs ``(B, O)``. Training wraps it
  in :class:`heads.trainer.NeuralHead`.
- a class that itself implements :class:`heads.interface.TrainableHead` (``lightgbm``).

A head reads clips (``@register_head("name")``, the default) or sequences
(``@register_head("name", reads="sequence")``: ``seqformer``, ``viewselect``). A sequence
head's ``forward(x, mask, clip_mask, clip_times)`` maps a whole clip sequence, tokens
``(B, V, K, N, D)`` float32, the view mask ``(B, V)``, the clip mask ``(B, V, K)`` bool (True =
the clip holds tokens) and the clip times ``(B, V, K, 2)`` float32 (start and end in
seconds, 0 where the clip is absent), to ``(B, O)``; it is only fitted on a store whose clip
axis is ``sequence``. A clip head fitted on such a store reads each view's mean over its
valid clips (:func:`heads.data.pool_clips`).

A head whose first step is the mean over each view's tokens says so with the class attribute
``pools_tokens = True``; training then feeds it tokens pooled once, ``(B, V, 1, D)``. A head
may set ``multiview_dropout``, the view dropout it trains with by default when a fit has more
than one view (``FitConfig.view_dropout`` None), and ``default_lr``, its peak learning rate
when ``FitConfig.lr`` is None (:data:`DEFAULT_LR` where it sets none). A fit looks its head
up once (:func:`resolve_head`) and passes the :class:`HeadSpec` to whatever builds or trains
it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass

HEADS: dict[str, type] = {}
READS = ("clip", "sequence")
"""What a head reads: ``clip``, one clip of each view at a time (on a sequence store, the mean
over each view's valid clips); ``sequence``, each view's whole ordered clip sequence."""
HEAD_READS: dict[str, str] = {}  # head name -> one of READS, set by register_head
# Peak AdamW learning rate of a head whose class sets no ``default_lr``.
DEFAULT_LR = 1e-3
SIZES = ("dim", "num_views", "outputs", "tokens", "view_names", "task")
"""The store's sizes a neural head may declare: token width, views, output width, tokens per
view, the names of the views it is fed (in order), and the name of the store's task (a head
that fuses per-view outputs asks the task how: ``Task.fuse_views``). Each head takes those it
uses."""
_discovered = False


def register_head(name: str, reads: str = "clip") -> Callable[[type], type]:
    """Class decorator: make a head buildable and trainable by ``name``; ``reads`` is what
    it takes from a store (:data:`READS`)."""
    if reads not in READS:
        raise ValueError(f"head {name!r}: reads must be one of {', '.join(READS)}, not {reads!r}")

    def add(cls: type) -> type:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is registered twice")
        HEADS[name] = cls
        HEAD_READS[name] = reads
        return cls

    return add


def discover() -> None:
    """Import every head file ``heads/__init__.py`` lists (once)."""
    global _discovered
    if _discovered:
        return
    from skill.heads import HEAD_FILES

    for module in dict.fromkeys(HEAD_FILES.values()):
        importlib.import_module(f"{__package__}.{module}")
    _discovered = True


def heads_in_order() -> list[str]:
    """Every head, in the order of ``HEAD_FILES`` and then of registration (heads registered
    at run time by other code), without importing a head file: the default head lists."""
    from skill.heads import HEAD_FILES

    return list(dict.fromkeys([*HEAD_FILES, *HEADS]))


def declared_head_names() -> list[str]:
    """The names :func:`head_names` gives, sorted, without importing a head file (so without
    torch); heads registered at run time by other code are included."""
    return sorted(heads_in_order())


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


@dataclass(frozen=True)
class HeadSpec:
    """A registered head, looked up once: its name, its class and the defaults the class
    declares. A fit resolves it from ``FitConfig.head`` and hands it down."""

    name: str
    cls: type

    @property
    def trainable(self) -> bool:
        """Whether the class implements TrainableHead itself (else it is an nn.Module)."""
        return is_trainable(self.cls)

    @property
    def reads(self) -> str:
        """``clip`` or ``sequence`` (:data:`READS`), as the head was registered."""
        return HEAD_READS.get(self.name, "clip")

    @property
    def pools_tokens(self) -> bool:
        """Whether its first step is the mean over each view's N tokens: training may then feed
        it that mean, computed once."""
        return bool(getattr(self.cls, "pools_tokens", False))

    @property
    def per_clip(self) -> bool:
        """Whether it outputs per clip, learning a per-clip task (``Task.per_clip``) and no
        per-take one; class attribute ``per_clip``."""
        return bool(getattr(self.cls, "per_clip", False))

    @property
    def multiview_dropout(self) -> float:
        """The view dropout it trains with by default when a fit has more than one view."""
        return float(getattr(self.cls, "multiview_dropout", 0.0))

    @property
    def default_lr(self) -> float:
        """The peak learning rate it trains with when none is given."""
        return float(getattr(self.cls, "default_lr", DEFAULT_LR))

    @property
    def default_hidden(self) -> int | None:
        """Its constructor's default ``hidden`` width; None where it has none."""
        hidden = self._parameters().get("hidden")
        return None if hidden is None or hidden.default is hidden.empty else hidden.default

    def arguments(self, offered: dict) -> dict:
        """Of ``offered`` (what a fit can give every head: the store's sizes, ``hidden``,
        ``dropout``), the keyword arguments its constructor declares."""
        return {key: value for key, value in offered.items() if self._declares(key)}

    def build(self, **options):
        """The ``nn.Module`` of a neural head: the sizes of :data:`SIZES` among ``options`` that
        its constructor does not declare are left out, every other option is passed (so a
        misspelt one is a TypeError)."""
        if self.trainable:
            raise KeyError(
                f"head {self.name!r} is not a neural head (it has no nn.Module to build)"
            )
        return self.cls(**{k: v for k, v in options.items() if k not in SIZES or self._declares(k)})

    def option_problem(self, options: dict) -> str | None:
        """What keeps ``options`` from rebuilding this head (unknown or missing option names),
        or None. A neural head takes its constructor's keyword arguments (a size it does not
        declare is ignored); a head that implements TrainableHead itself takes the names in
        its class attribute ``option_names`` (none if unset)."""
        ignored: set[str] = set()
        if self.trainable:
            accepted, required = set(getattr(self.cls, "option_names", ())), set()
        else:
            params = list(self._parameters().values())
            if any(p.kind is p.VAR_KEYWORD for p in params):
                return None
            named = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            accepted = {p.name for p in named}
            required = {p.name for p in named if p.default is p.empty}
            ignored = set(SIZES)
        unknown = sorted(set(options) - accepted - ignored)
        missing = sorted(required - set(options))
        if unknown:
            takes = ", ".join(sorted(accepted)) or "none"
            return f"unknown option {', '.join(unknown)} (head {self.name!r} takes {takes})"
        if missing:
            return f"missing option {', '.join(missing)} of head {self.name!r}"
        return None

    def _parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.cls).parameters)

    def _declares(self, key: str) -> bool:
        params = self._parameters()
        return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def resolve_head(name: str) -> HeadSpec:
    """The registered head ``name``, looked up once; KeyError naming the choices for another
    name."""
    return HeadSpec(name, head_class(name))


def build_head(name: str, **options):
    """Build the ``nn.Module`` of a registered neural head (:meth:`HeadSpec.build`)."""
    return resolve_head(name).build(**options)


def option_problem(name: str, options: dict) -> str | None:
    """What keeps ``options`` from rebuilding head ``name`` (:meth:`HeadSpec.option_problem`)."""
    return resolve_head(name).option_problem(options)
