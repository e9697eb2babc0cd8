"""The merging methods: a registry of short, pure functions over tensors.

Each method is registered under a name with its parameters (default and allowed range). A *core*
method turns one tensor of the base and of each model into the merged tensor; a *modifier* wraps a
core method: ``dare`` rewrites the task vectors before it, ``aim`` relaxes its output after it.
Method strings compose modifiers and one core method with ``+``, e.g. ``dare+ties`` or ``aim+ties``.

All formulas use task vectors δ_i = θ_i − θ_0 of the models θ_i over the base θ_0. Hyper-parameter
defaults are Wu et al. 2025 (arXiv 2503.20641) Table 7 for the 7B merges where the paper gives them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()  # marks a parameter without a default


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its type and the rule it must satisfy."""

    default: Any
    doc: str
    rule: str = ""  # human-readable rule, shown in errors ("0 <= k <= 1")
    check: Callable[[Any], bool] = lambda v: True
    type: type = float
    choices: tuple = ()


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    kind: str  # "core" or "modifier"
    needs_base: bool
    params: dict[str, Param] = field(default_factory=dict)
    n_models: tuple[int, int | None] = (1, None)  # (min, max) number of models
    doc: str = ""
    # Each output entry depends only on the same entry of the inputs (and, for TIES, on per-tensor
    # thresholds the executor passes in), so the executor may merge a tensor block of rows by block.
    elementwise: bool = False


METHODS: dict[str, Method] = {}


def register(name: str, *, kind: str = "core", needs_base: bool = True, params: dict[str, Param] | None = None,
             n_models: tuple[int, int | None] = (1, None), elementwise: bool = False):
    """Decorator: add a tensor function to :data:`METHODS` under ``name``."""

    def wrap(fn):
        if name in METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        METHODS[name] = Method(name, fn, kind, needs_base, dict(params or {}), n_models,
                               (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "", elementwise)
        return fn

    return wrap


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def alpha_param(default: float, doc: str = "scale of the merged task vector") -> Param:
    return Param(default, doc, "α >= 0 and finite", lambda v: finite(v) and v >= 0)


from l2s.merge.methods import activation, svd, task_vector  # noqa: E402,F401  (fills METHODS)
