"""The merging methods: a registry of self-describing methods, one file per method in this package.

Each method file registers its formula (a short, pure function over tensors) with :func:`register`,
together with everything else about it:

- its hyper-parameters (:class:`Param`: default, allowed range);
- what it needs beyond one tensor of each input (:class:`Needs`: calibration statistics, a pass over
  the whole model before merging, the base as one of the merged models, whole matrices for SVDs);
- the hooks that provide those needs (``prepare``, ``tensor_args``, ``tensor_pass``, ``rewrite``,
  ``relax``, ``record``), which the executor (:mod:`l2s.merge.executor`) calls without knowing any
  method by name;
- its paper, link, display label and other spellings, from which the README's method table
  (``python -m l2s.merge.methods --markdown``), the config aliases and the figure labels are made.

A *core* method turns one tensor of the base and of each model into the merged tensor. A *modifier*
wraps a core method: a ``pre`` modifier rewrites each task vector before it (DARE), a ``post``
modifier rewrites its output (AIM). Method strings compose modifiers and one core method with ``+``,
e.g. ``dare+ties`` or ``aim+ties``; a modifier file names its usual combinations as :class:`Variant`
entries (``dare_ties``, ``aim``) so that config, run tags and figures share one key per method.

Adding a method is adding one file here: the package imports every module in it.

All formulas use task vectors δ_i = θ_i − θ_0 of the models θ_i over the base θ_0. Hyper-parameter
defaults are Wu et al. 2025 (arXiv 2503.20641) Table 7 for the 7B merges where the paper gives them,
else the method's own paper or reference code (each file says which).

Hooks (all optional; ``merger`` is the :class:`l2s.merge.executor.Merger`, ``state`` what the
method's ``prepare`` returned):

- ``prepare(merger) -> state``: once, before any tensor is merged (global passes, calibration);
- ``tensor_args(merger, state, name) -> dict``: core methods, extra keyword arguments of ``fn`` for
  tensor ``name`` (whole-tensor thresholds, per-layer coefficients);
- ``tensor_pass(merger, name) -> pass_state``: pre modifiers, fresh state for one pass over the
  blocks of a tensor (DARE's seeded generators);
- ``rewrite(merger, state, pass_state, i, delta) -> delta``: pre modifiers, model i's task vector;
- ``relax(merger, state, name, base, merged) -> merged``: post modifiers;
- ``record(state) -> dict``: entries of ``l2s_merge.json`` (keys declared in ``record_keys``, which
  every record carries, None when the method is not used).
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # marks a parameter without a default


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its type and the rule it must satisfy."""

    default: Any
    doc: str
    rule: str = ""  # human-readable rule, shown in errors ("0 <= k <= 1")
    check: Callable[[Any], bool] = lambda v: True
    type: type = float


@dataclass(frozen=True)
class Needs:
    """What a method needs besides one tensor of the base and of each model.

    ``calibration``: ``"base"`` — statistics of the base on one calibration file (AIM);
    ``"participants"`` — statistics of every merged model, each on its own file or all on one (Sens).
    ``global_pass``: when the method reads the whole model once before merging, the condition in words
    (its ``prepare`` hook does the pass). ``base_participant``: the boolean parameter that makes the
    base one of the merged models (the executor then passes ``[θ_0] + models``). ``svd``: the method
    takes SVDs of whole matrices, so tensors are merged whole rather than block by block of rows.
    """

    calibration: str | None = None
    global_pass: str = ""
    base_participant: str = ""
    svd: bool = False

    def words(self) -> str:
        out = []
        if self.calibration:
            out.append(f"calibration ({'the base' if self.calibration == 'base' else 'each participant'})")
        if self.global_pass:
            out.append(f"a global pass ({self.global_pass})")
        if self.base_participant:
            out.append(f"the base as participant ({self.base_participant})")
        if self.svd:
            out.append("SVDs of whole matrices")
        return ", ".join(out) or "—"


@dataclass(frozen=True)
class Variant:
    """A named combination of a modifier with a core method, e.g. ``dare_ties`` = ``dare+ties``."""

    key: str
    method: str
    label: str
    order: float
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable
    kind: str  # "core", "pre" (rewrites the task vectors before the core) or "post" (rewrites its output)
    needs_base: bool
    params: dict[str, Param] = field(default_factory=dict)
    n_models: tuple[int, int | None] = (1, None)  # (min, max) number of models
    min_participants: int = 1  # models, plus the base when it is a participant
    needs: Needs = Needs()
    label: str = ""
    paper: str = ""  # "Yadav et al. 2023, arXiv 2306.01708"
    url: str = ""
    aliases: tuple[str, ...] = ()
    order: float = 0.0  # place in the papers' tables (figures, README)
    combines_with: tuple[str, ...] | None = None  # modifiers: the core methods they apply to (None: any with a base)
    variants: tuple[Variant, ...] = ()
    prepare: Callable | None = None
    tensor_args: Callable | None = None
    tensor_pass: Callable | None = None
    rewrite: Callable | None = None
    relax: Callable | None = None
    record: Callable | None = None
    record_keys: tuple[str, ...] = ()

    @property
    def elementwise(self) -> bool:
        """Each output entry depends only on the same entry of the inputs (and on what ``tensor_args``
        computes from whole tensors), so the executor may merge a tensor block of rows by block."""
        return not self.needs.svd

    @property
    def fn_params(self) -> tuple[str, ...]:
        """The hyper-parameters ``fn`` takes (the others are read by the hooks)."""
        sig = inspect.signature(self.fn).parameters
        return tuple(p for p in self.params if p in sig and p != self.needs.base_participant)

    def doc(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0] if self.fn.__doc__ else ""


METHODS: dict[str, Method] = {}


def register(name: str, *, kind: str = "core", needs_base: bool = True, params: dict[str, Param] | None = None,
             **fields):
    """Decorator: add a tensor function to :data:`METHODS` under ``name`` (see :class:`Method`)."""

    def wrap(fn):
        if name in METHODS:
            raise ValueError(f"merge method {name!r} registered twice")
        if kind not in ("core", "pre", "post"):
            raise ValueError(f"merge method {name!r}: kind must be core, pre or post, not {kind!r}")
        METHODS[name] = Method(name, fn, kind, needs_base, dict(params or {}), **fields)
        return fn

    return wrap


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def alpha_param(default: float, doc: str = "scale of the merged task vector") -> Param:
    return Param(default, doc, "α >= 0 and finite", lambda v: finite(v) and v >= 0)


def bool_param(default: bool, doc: str) -> Param:
    return Param(default, doc, "true or false", lambda v: isinstance(v, bool), bool)


def choice_param(default: str, choices: tuple[str, ...], doc: str) -> Param:
    return Param(default, doc, " or ".join(choices), lambda v: v in choices, str)


# -- one vocabulary: keys, method strings, labels ------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One row of the method table: the key shared by configs, run tags and figures."""

    key: str
    method: str  # the method string it stands for ("dare+ties")
    label: str
    order: float
    aliases: tuple[str, ...]
    owner: Method  # the method whose file declares it (the core, or the modifier of a variant)


def entries() -> list[Entry]:
    """Every method key in the papers' table order: each core method, then each modifier's variants."""
    out = [Entry(m.name, m.name, m.label or m.name, m.order, m.aliases, m)
           for m in METHODS.values() if m.kind == "core"]
    out += [Entry(v.key, v.method, v.label, v.order, v.aliases, m) for m in METHODS.values() for v in m.variants]
    return sorted(out, key=lambda e: (e.order, e.key))


def aliases() -> dict[str, str]:
    """Every spelling of a method key (its aliases and the key itself) -> the method string."""
    out: dict[str, str] = {}
    for e in entries():
        for name in (e.key, *e.aliases):
            if out.setdefault(name, e.method) != e.method:
                raise ValueError(f"method name {name!r} stands for both {out[name]!r} and {e.method!r}")
    return out


def labels() -> dict[str, str]:
    """Method key -> printed label, in table order."""
    return {e.key: e.label for e in entries()}


def figure_key(method: str) -> str:
    """The key of a method string or spelling: ``"dare+ties"`` -> ``"dare_ties"``, ``"aim+ties"`` ->
    ``"aim"``; a combination no entry names keeps its canonical method string (``"aim+dare+ties"``)."""
    from l2s.merge.config import parse_method

    spec = parse_method(method)
    for e in entries():
        if parse_method(e.method) == spec:
            return e.key
    return spec.name


def markdown_table() -> str:
    """The README's method table (``python -m l2s.merge.methods --markdown``)."""
    rows = ["| key | label | method string | paper | needs | parameters (default) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for e in entries():
        parts = [METHODS[p] for p in e.method.split("+")]
        paper = "; ".join(f"[{m.paper}]({m.url})" if m.url else m.paper for m in parts if m.paper)
        needs = ", ".join(w for w in (m.needs.words() for m in parts) if w != "—") or "—"
        params = ", ".join(f"`{name}`={_show(p.default)}" for m in parts for name, p in m.params.items()) or "—"
        rows.append(f"| `{e.key}` | {e.label} | `{e.method}` | {paper} | {needs} | {params} |")
    return "\n".join(rows) + "\n"


def _show(value) -> str:
    if value is REQUIRED:
        return "required"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _load_all() -> None:
    """Import every module of this package: each method file registers itself."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_load_all()
