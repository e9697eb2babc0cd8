"""``l2s sweep``: the accuracy-length Pareto front of one merge hyper-parameter, in few evaluations.

Wu et al. 2025 (arXiv 2503.20641, §6) find merging sensitive to its hyper-parameters and call for
selecting them automatically; their Table 7 values are hand-picked per size. This module searches
ONE parameter ``param`` of a merge ``method`` (the others fixed) over ``[low, high]`` for the front of
(accuracy ↑, mean response tokens ↓) on a **dev** split, then evaluates the front's points on the
**test** split. Each value is merged (:mod:`l2s.merge`, into the merge cache) and evaluated
(:func:`l2s.eval.run.evaluate`).

**Search** (:func:`search`), within ``budget`` dev evaluations: evaluate ``low`` and ``high``, then
split one interval between neighbouring evaluated values at its midpoint, again and again. With
accuracy ``u`` and tokens ``v`` normalised by their observed ranges, ``u = (a − a_min)/(a_max − a_min)``,
``v = (t − t_min)/(t_max − t_min)``, the interval chosen is the one with the largest

1. **open box**: the area of the box spanned by its two ends, ``[u_i, u_j] × [v_i, v_j]``, that no
   evaluated point dominates. If the response between two values lies between their responses (true
   of a monotone response such as task arithmetic's α), a new point there can only land in that box,
   and the open area is the most hypervolume it can add: the split with the largest best-case gain;
2. then (no box open, e.g. one end dominates the other) the largest **change** ``√(Δu² + Δv²)``
   between its ends, the normalised-range rule: refine where the response moves most;
3. then the widest interval, then the lowest one.

An interval narrower than ``2 · resolution`` is not split (default ``(high − low)/64``; 1 for an
integer parameter, whose midpoint is rounded down); the search stops early when none is left.
Golden-section search is not used: it finds the optimum of one unimodal scalar, not a front of two
objectives. With ``grid`` = N, the N evenly spaced values of ``[low, high]`` are evaluated instead
(the reference to compare the search with).

**Comparing fronts** (:func:`compare_fronts`): in accuracy ``a`` (a fraction) and relative length
``ℓ = t / L``, ``L`` the most tokens of any point of either run, each reference-front point's distance
to the nearest point of the sweep's front, ``√(Δa² + Δℓ²)`` (with Δa also in points), and the
hypervolume ratio ``HV(front) / HV(reference front)``, ``HV`` = the area of ``⋃ [ℓ_i, 1] × [0, a_i]``
(reference point: accuracy 0 at the longest length).

The run directory (resumable in place, like an evaluation run): ``sweep_config.json`` (written
first; a rerun with another config is refused), ``points/<param>-<value>/dev`` and ``/test``
(evaluation runs of the run contract, :mod:`l2s.runs`), ``sweep.json`` (every point, the front, its
test results, the search's choices, the comparison; no time, host or path outside the run: same
inputs and seed, same bytes) and ``provenance.json``. There is no top-level ``metrics.json``: a
sweep is many models, each point's run has its own. The test runs are tagged for the figures (size,
role ``merged``, ``sweep: true``: the Pareto plot draws them) unless ``plot`` is false; the dev runs
carry no size and are never plotted. Merged checkpoints stay in the cache only while needed (those
off the current front are deleted as the search goes, the rest at the end) unless ``keep_merges``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s import io

log = logging.getLogger(__name__)

CONFIG, RECORD, PROVENANCE, POINTS = "sweep_config.json", "sweep.json", "provenance.json", "points"
DEFAULT_DIVISIONS = 64  # default resolution: (high - low) / 64
DIGITS = 10  # evaluated values are rounded to this many decimals (no float noise in names and JSON)
_SCORE_DIGITS = 12  # scores compared after rounding: ties broken by width, then position, not by noise


# -- the search, on any objective ------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One evaluated value: accuracy (a fraction), mean tokens, and when it was evaluated (0 = first)."""

    value: float
    accuracy: float
    tokens: float
    order: int = 0


@dataclass
class SearchResult:
    """The points in evaluation order, the rule behind each one (``choices``) and why the search ended
    (``"budget"``, ``"resolution"``: no interval left to split, or ``"grid"``)."""

    points: list[Point]
    choices: list[dict[str, Any]]
    stopped: str


def front_mask(points: list[Point]) -> list[bool]:
    """True where no other point has at least the accuracy and at most the tokens, and is better in one
    (:func:`l2s.figures.tables.pareto_front`)."""
    from l2s.figures.tables import pareto_front

    return pareto_front([p.tokens for p in points], [p.accuracy for p in points])


def front(points: list[Point]) -> list[Point]:
    """The non-dominated points, shortest first (ties: by value)."""
    return sorted((p for p, on in zip(points, front_mask(points)) if on), key=lambda p: (p.tokens, p.value))


def _scale(values: list[float]) -> Callable[[float], float]:
    lo, hi = min(values), max(values)
    return (lambda x: (x - lo) / (hi - lo)) if hi > lo else (lambda x: 0.0)


def _open_area(box: tuple[float, float, float, float], dominators: list[tuple[float, float]]) -> float:
    """Area of the box ``[u0, u1] × [v0, v1]`` (u: accuracy, higher is better; v: length, lower is
    better) that none of ``dominators`` dominates; point (u, v) dominates {u' ≤ u, v' ≥ v}. The dominated
    parts are rectangles sharing the box's corner (u0, v1): their union is a staircase."""
    u0, u1, v0, v1 = box
    rects = sorted(((min(u, u1) - u0, v1 - max(v, v0)) for u, v in dominators if u > u0 and v < v1), reverse=True)
    covered, height = 0.0, 0.0
    for i, (w, h) in enumerate(rects):
        height = max(height, h)
        covered += (w - (rects[i + 1][0] if i + 1 < len(rects) else 0.0)) * height
    return (u1 - u0) * (v1 - v0) - covered


def _midpoint(a: float, b: float, integer: bool) -> float:
    return (int(a) + int(b)) // 2 if integer else round((a + b) / 2, DIGITS)


def choose_interval(points: list[Point], resolution: float, integer: bool = False) -> dict[str, Any] | None:
    """The interval to split next (see the module docstring) as ``{interval, value, rule, open_area,
    change}``, or None when every interval is narrower than ``2 · resolution``."""
    by_value = sorted(points, key=lambda p: p.value)
    su, sv = _scale([p.accuracy for p in points]), _scale([p.tokens for p in points])
    dominators = [(su(p.accuracy), sv(p.tokens)) for p in front(points)]
    best, best_key = None, None
    for i, (a, b) in enumerate(zip(by_value, by_value[1:])):
        width = b.value - a.value
        if width < 2 * resolution - 1e-12:
            continue
        ua, ub, va, vb = su(a.accuracy), su(b.accuracy), sv(a.tokens), sv(b.tokens)
        area = round(_open_area((min(ua, ub), max(ua, ub), min(va, vb), max(va, vb)), dominators), _SCORE_DIGITS)
        change = round(math.hypot(ub - ua, vb - va), _SCORE_DIGITS)
        key = (area, change, round(width, DIGITS), -i)
        if best_key is None or key > best_key:
            rule = "open box" if area > 0 else ("change" if change > 0 else "widest")
            best_key = key
            best = {"interval": [a.value, b.value], "value": _midpoint(a.value, b.value, integer), "rule": rule,
                    "open_area": area, "change": change}
    return best


def grid_values(low: float, high: float, n: int, integer: bool = False) -> list[float]:
    """``n`` evenly spaced values from ``low`` to ``high``, both included (an integer parameter's rounded,
    duplicates dropped)."""
    if n < 2:
        raise ValueError(f"grid must be an integer >= 2, got {n!r}")
    values = [low + (high - low) * i / (n - 1) for i in range(n)]
    if integer:
        return sorted({int(round(v)) for v in values})
    return [round(v, DIGITS) for v in values]


def search(objective: Callable[[float], tuple[float, float]], low: float, high: float, budget: int,
           resolution: float | None = None, integer: bool = False, grid: int | None = None,
           progress: Callable[[Point], None] | None = None) -> SearchResult:
    """Evaluate ``objective(value) -> (accuracy, mean tokens)`` at most ``budget`` times (or on ``grid``
    values) and return the points (see the module docstring). ``progress`` is called after each point."""
    points: list[Point] = []
    choices: list[dict[str, Any]] = []

    def evaluate(value: float, choice: dict[str, Any]) -> None:
        accuracy, tokens = objective(value)
        points.append(Point(value, float(accuracy), float(tokens), len(points)))
        choices.append({"order": len(points) - 1, **choice})
        if progress is not None:
            progress(points[-1])

    if grid is not None:
        for value in grid_values(low, high, grid, integer):
            evaluate(value, {"value": value, "rule": "grid"})
        return SearchResult(points, choices, "grid")
    if budget < 2:
        raise ValueError(f"budget must be an integer >= 2 (low and high first), got {budget!r}")
    if resolution is None:
        resolution = 1 if integer else (high - low) / DEFAULT_DIVISIONS
    for value in (low, high):
        evaluate(int(value) if integer else round(value, DIGITS), {"value": value, "rule": "end"})
    while len(points) < budget:
        choice = choose_interval(points, resolution, integer)
        if choice is None:
            return SearchResult(points, choices, "resolution")
        evaluate(choice["value"], choice)
    return SearchResult(points, choices, "budget")


# -- comparing two fronts --------------------------------------------------------------------------------
def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area of ``⋃ [ℓ_i, 1] × [0, a_i]`` over (relative length ℓ, accuracy a) points: what they dominate
    up to the reference point (ℓ = 1, a = 0)."""
    pts = sorted((min(max(ell, 0.0), 1.0), max(a, 0.0)) for ell, a in points)
    area, best = 0.0, 0.0
    for i, (ell, a) in enumerate(pts):
        best = max(best, a)
        area += ((pts[i + 1][0] if i + 1 < len(pts) else 1.0) - ell) * best
    return area


def compare_fronts(points: list[Point], reference: list[Point]) -> dict[str, Any]:
    """How well the front of ``points`` covers the front of ``reference`` (see the module docstring):
    per reference-front point the nearest front point and the signed differences (accuracy in points,
    relative length), their mean and max distance, and both hypervolumes with their ratio."""
    if not points or not reference:
        raise ValueError("compare_fronts needs points on both sides")
    scale = max(p.tokens for p in [*points, *reference])
    scale = scale if scale > 0 else 1.0
    mine, theirs = front(points), front(reference)

    def coords(p: Point) -> tuple[float, float]:
        return p.tokens / scale, p.accuracy

    rows = []
    for r in theirs:
        near = min(mine, key=lambda p: (math.dist(coords(p), coords(r)), p.value))
        rows.append({"value": r.value, "nearest": near.value, "distance": math.dist(coords(near), coords(r)),
                     "accuracy_pts": 100 * (near.accuracy - r.accuracy),
                     "relative_length": (near.tokens - r.tokens) / scale})
    hv, hv_ref = hypervolume([coords(p) for p in mine]), hypervolume([coords(p) for p in theirs])
    return {"length_scale": scale, "distances": rows,
            "max_distance": max(r["distance"] for r in rows),
            "mean_distance": sum(r["distance"] for r in rows) / len(rows),
            "hypervolume": hv, "reference_hypervolume": hv_ref,
            "hypervolume_ratio": hv / hv_ref if hv_ref > 0 else None,
            "evaluations": len(points), "reference_evaluations": len(reference),
            "front": [p.value for p in mine], "reference_front": [p.value for p in theirs]}


# -- the config -------------------------------------------------------------------------------------------
@dataclass
class SweepConfig:
    """A sweep of ``param`` of ``method`` over ``[low, high]`` (see the module docstring).

    Models: ``models_run`` (a run of ``00_models``; its ``size`` tags the runs, its ``data_dir`` is the
    default data) or ``quick`` + ``slow`` (+ ``short``) checkpoints, merged as ``01_merge`` merges them
    (:func:`l2s.notebook_helpers.merge_inputs`). ``params``: the method's fixed hyper-parameters.
    ``budget``: dev evaluations of the search; ``grid``: evaluate N evenly spaced values instead.
    Data: ``datasets`` from ``data_dir`` (None: the models run's, else generated for ``toy``), the search
    on ``dev_split``, the front on ``test_split``. ``reference_run``: another sweep run (a grid) whose dev
    front this one's is compared with. ``plot``: tag the front's test runs for the figures.
    """

    out: str
    method: str
    param: str
    low: float
    high: float
    params: dict[str, Any] = field(default_factory=dict)
    budget: int = 5
    grid: int | None = None
    resolution: float | None = None
    models_run: str | None = None
    quick: str | None = None
    slow: str | None = None
    short: str | None = None
    size: str | None = None
    calibration: str | list[str] | None = None
    calibration_samples: int = 100
    datasets: list[str] = field(default_factory=lambda: ["toy"])
    data_dir: str | None = None
    dev_split: str = "dev"
    test_split: str = "test"
    prompt: str = "chat"
    max_new_tokens: int = 128
    backend: str = "auto"
    batch_size: int = 64
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    seed: int = 0
    reference_run: str | None = None
    plot: bool = True
    keep_merges: bool = False

    def __post_init__(self) -> None:
        from l2s.eval.run import EvalConfig

        self.params = dict(self.params)
        if self.models_run is None and not (self.quick and self.slow):
            raise ValueError("give models_run (a run of 00_models) or the quick and slow checkpoints")
        if self.models_run is not None and (self.quick or self.slow or self.short):
            raise ValueError("give either models_run or quick/slow/short checkpoints, not both")
        for name in ("budget", "calibration_samples", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "budget" else 1):
                raise ValueError(f"{name} must be an integer >= {2 if name == 'budget' else 1}, got {value!r}")
        if self.grid is not None and (isinstance(self.grid, bool) or not isinstance(self.grid, int) or self.grid < 2):
            raise ValueError(f"grid must be an integer >= 2 (values from low to high) or null, got {self.grid!r}")
        for name in ("low", "high"):
            if isinstance(getattr(self, name), bool) or not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        if not self.low < self.high:
            raise ValueError(f"low must be below high, got low={self.low!r}, high={self.high!r}")
        if self.resolution is not None and not (math.isfinite(self.resolution) and 0 < self.resolution):
            raise ValueError(f"resolution must be a number > 0 or null, got {self.resolution!r}")
        if self.dev_split == self.test_split:
            raise ValueError(f"dev_split and test_split must differ (the search must not see the test split), "
                             f"both are {self.dev_split!r}")
        kind = self._param_type()
        if kind is int:
            for name in ("low", "high"):
                if float(getattr(self, name)) != int(getattr(self, name)):
                    raise ValueError(f"{name}: parameter {self.param!r} of {self.method!r} is an integer, "
                                     f"got {getattr(self, name)!r}")
            self.low, self.high = int(self.low), int(self.high)
        else:
            self.low, self.high = float(self.low), float(self.high)
        for name in ("low", "high"):
            self.merge_params(getattr(self, name), check=f"{name}={getattr(self, name)!r}")
        EvalConfig(model="-", datasets=tuple(self.datasets), out="-", prompt=self.prompt, backend=self.backend,
                   batch_size=self.batch_size, tensor_parallel_size=self.tensor_parallel_size,
                   data_parallel_size=self.data_parallel_size, max_model_len=self.max_model_len,
                   gpu_memory_utilization=self.gpu_memory_utilization)  # its checks, before any work

    def _param_type(self) -> type:
        from l2s.merge import parse_method
        from l2s.merge.methods import METHODS

        spec = parse_method(self.method)
        owners = {name: METHODS[c].params[name] for c in spec.components for name in METHODS[c].params}
        if self.param not in owners:
            raise ValueError(f"param: {self.param!r} is no parameter of method {spec.name!r}; "
                             f"known: {', '.join(sorted(owners)) or 'none'}")
        if self.param in self.params:
            raise ValueError(f"params: {self.param!r} is the swept parameter; drop it from the fixed params")
        kind = owners[self.param].type
        if kind not in (int, float):
            raise ValueError(f"param: {self.param!r} of {spec.name!r} is a {kind.__name__}, not a number; "
                             "only numeric parameters can be swept")
        return kind

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int)

    def merge_params(self, value: float, check: str | None = None) -> dict[str, Any]:
        """The merge's parameters at ``value`` (fixed ones plus the swept one), checked by the registry."""
        from l2s.merge import MergeConfig

        params = {**self.params, self.param: value}
        try:
            MergeConfig(method=self.method, models=["-"], out="-", params=params).resolved_params()
        except ValueError as e:
            raise ValueError(f"{check}: {e}" if check else str(e)) from None
        return params

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def key(self) -> dict[str, Any]:
        """What decides the sweep's results: everything but where they go."""
        return {k: v for k, v in self.to_dict().items() if k != "out"}


# -- running a sweep ------------------------------------------------------------------------------------
def value_text(value: float) -> str:
    """``0.55`` -> ``"0.55"``, ``4`` -> ``"4"``: how a value names its points directory."""
    return str(value) if isinstance(value, int) else format(value, f".{DIGITS}g")


def _models(cfg: SweepConfig) -> dict[str, Any]:
    from l2s import notebook_helpers as nh

    if cfg.models_run is not None:
        return nh.read_models(cfg.models_run)
    return {"size": cfg.size, "quick": cfg.quick, "slow": cfg.slow, "short": cfg.short}


FREE = ("reference_run", "keep_merges")  # may change between a run and its resumption: no result depends on them


def _prepare_out(cfg: SweepConfig) -> Path:
    out = Path(cfg.out)
    path = out / CONFIG
    if path.is_file():
        saved, key = io.read_json(path), cfg.key()
        diff = sorted(k for k in set(saved) | set(key) if saved.get(k) != key.get(k) and k not in FREE)
        if diff:
            raise FileExistsError(f"{out} holds a sweep with another config (differs in {diff}); choose another "
                                  "out or delete it")
    elif out.is_dir() and any(p.suffix != ".ipynb" for p in out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a sweep run directory (no {CONFIG})")
    io.atomic_write_json(path, cfg.key())
    return out


def _same_finished_run(run: Path, ecfg) -> bool:
    from l2s.eval.run import EvalConfig
    from l2s.runs import is_finished

    if not is_finished(run):
        return False
    saved = io.read_json(run / "config.json")
    return isinstance(saved, dict) and EvalConfig.from_dict(saved).outputs_key() == ecfg.outputs_key()


def summarize_run(run: Path) -> dict[str, Any]:
    """A point's metrics: accuracy, mean tokens and reflective ratio (means over datasets, as the
    figures' Pareto plot takes them), responses, and per dataset the same by level."""
    from l2s.runs import read_metrics

    datasets = read_metrics(run)["datasets"]
    names = sorted(datasets)
    keys = ("n", "accuracy", "mean_tokens", "reflective_ratio")

    def mean(key: str) -> float:
        return sum(float(datasets[d][key]) for d in names) / len(names)

    return {"accuracy": mean("accuracy"), "mean_tokens": mean("mean_tokens"),
            "reflective_ratio": mean("reflective_ratio"), "n": sum(datasets[d]["n"] for d in names),
            "datasets": {d: {**{k: datasets[d][k] for k in keys},
                             "by_level": {lv: {k: b[k] for k in keys}
                                          for lv, b in (datasets[d].get("by_level") or {}).items()}}
                         for d in names}}


class _Runner:
    """Merges and evaluates the values of one sweep; keeps track of the merged checkpoints it made."""

    def __init__(self, cfg: SweepConfig, progress: bool):
        from l2s import notebook_helpers as nh
        from l2s.runs import method_key

        self.cfg, self.progress = cfg, progress
        self.out = Path(cfg.out)
        self.models = _models(cfg)
        self.size = cfg.size or self.models.get("size")
        self.data_dir = cfg.data_dir or self.models.get("data_dir")
        self.method_key = method_key(cfg.method)
        self.fields = {"method": cfg.method, **nh.merge_inputs(cfg.method, self.models), "seed": cfg.seed,
                       "dtype": cfg.dtype, "calibration": nh.calibration_files(cfg.method, cfg.calibration,
                                                                                self.models),
                       "calibration_samples": cfg.calibration_samples}
        self.inputs = {"base": self.fields["base"], "models": self.fields["models"],
                       "calibration": self.fields["calibration"], "data_dir": self.data_dir}
        self.paths: dict[float, Any] = {}  # value -> its MergeConfig
        self.ran = 0

    def run_dir(self, value: float, split: str) -> Path:
        return self.out / self.point_dir(value, split)

    def point_dir(self, value: float, split: str) -> str:
        """``points/<param>-<value>/<split>``, relative to the run directory."""
        return f"{POINTS}/{self.cfg.param}-{value_text(value)}/{split}"

    def merge_config(self, value: float):
        """The merge of ``value`` (:func:`l2s.merge.cache.merged_path`: keyed by its inputs' content)."""
        from l2s.merge import MergeConfig
        from l2s.merge.cache import merged_path

        if value not in self.paths:
            fields = {**self.fields, "params": self.cfg.merge_params(value, check=f"{self.cfg.param}={value!r}")}
            path = merged_path(f"{self.out.name}-{self.cfg.param}-{value_text(value)}", fields)
            self.paths[value] = MergeConfig(out=str(path), overwrite=True, **fields)
        return self.paths[value]

    def eval_config(self, value: float, split: str):
        from l2s.eval.run import EvalConfig
        from l2s.eval.sampling import SamplingConfig

        cfg = self.cfg
        tags = {"role": "merged", "method": self.method_key, "params": {**cfg.params, cfg.param: value},
                "sweep": True}
        if split == cfg.test_split and cfg.plot and self.size:
            tags["size"] = self.size
        else:
            tags["split"] = split  # no size: not drawn by the figures (a dev run, or plot off)
        return EvalConfig(model=self.merge_config(value).out, datasets=tuple(cfg.datasets),
                          out=str(self.run_dir(value, split)), data_dir=self.data_dir, split=split, prompt=cfg.prompt,
                          sampling=SamplingConfig(max_new_tokens=cfg.max_new_tokens, seed=cfg.seed),
                          backend=cfg.backend, batch_size=cfg.batch_size,
                          tensor_parallel_size=cfg.tensor_parallel_size, data_parallel_size=cfg.data_parallel_size,
                          max_model_len=cfg.max_model_len, gpu_memory_utilization=cfg.gpu_memory_utilization,
                          dtype=cfg.dtype, tags=tags)

    def evaluate(self, value: float, split: str) -> dict[str, Any]:
        """Merge (unless its run is already finished) and evaluate ``value`` on ``split``; its summary."""
        from l2s.eval.run import evaluate
        from l2s.merge import already_merged, merge

        ecfg = self.eval_config(value, split)
        if not _same_finished_run(Path(ecfg.out), ecfg):
            mcfg = self.merge_config(value)
            if not already_merged(mcfg):
                merge(mcfg)
            evaluate(ecfg, progress=self.progress)
            self.ran += 1
        return summarize_run(Path(ecfg.out))

    def release(self, values, keep: set[float] = frozenset()) -> None:
        """Delete the merged checkpoints of ``values`` not in ``keep`` (unless ``keep_merges``)."""
        if self.cfg.keep_merges:
            return
        for value in values:
            path = Path(self.merge_config(value).out)
            if value not in keep and path.is_dir():
                shutil.rmtree(path)


def _points_of(record: dict[str, Any]) -> list[Point]:
    return [Point(p["value"], p["dev"]["accuracy"], p["dev"]["mean_tokens"], p["order"]) for p in record["points"]]


def read_sweep(run: str | Path) -> dict[str, Any]:
    """A sweep run's ``sweep.json``; errors name the file."""
    path = Path(run) / RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {run} is not a finished sweep run (run `l2s sweep` or "
                                "notebooks/06_sweep.ipynb into it)")
    record = io.read_json(path)
    if not isinstance(record, dict) or record.get("kind") != "sweep" or not isinstance(record.get("points"), list):
        raise ValueError(f"{path}: not a sweep record (expected kind 'sweep' and a list of points)")
    return record


COMPARED = ("method", "param", "params", "calibration_samples", "datasets", "dev_split", "prompt", "max_new_tokens",
            "dtype", "seed")


def _same_path(a: Any, b: Any) -> bool:
    """Equal, or the same existing file or directory however it is spelled (relative, absolute)."""
    if a == b:
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_path(x, y) for x, y in zip(a, b))
    return isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()


def check_reference(cfg: SweepConfig, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The record of ``cfg.reference_run``, which must sweep the same parameter of the same method on the
    same models and dev data (:data:`COMPARED` and the merge inputs); None without one."""
    if cfg.reference_run is None:
        return None
    ref = read_sweep(cfg.reference_run)
    diff = [k for k in COMPARED if ref["config"].get(k) != getattr(cfg, k)]
    diff += [f"inputs.{k}" for k in inputs if not _same_path((ref.get("inputs") or {}).get(k), inputs[k])]
    if diff:
        raise ValueError(f"reference_run {cfg.reference_run}: its sweep differs in {diff}; compare sweeps of the "
                         "same parameter, models and dev data")
    return ref


def run_sweep(cfg: SweepConfig, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep of ``cfg`` into ``cfg.out`` and return its record (``sweep.json``)."""
    from tqdm.auto import tqdm

    from l2s.provenance import provenance

    runner = _Runner(cfg, progress)
    reference = check_reference(cfg, runner.inputs)  # before any work
    _prepare_out(cfg)
    summaries: dict[float, dict[str, Any]] = {}
    total = cfg.grid if cfg.grid is not None else cfg.budget
    bar = tqdm(total=total, desc=f"sweep {cfg.param} (dev)", unit="eval", disable=not progress)

    def objective(value: float) -> tuple[float, float]:
        summaries[value] = runner.evaluate(value, cfg.dev_split)
        return summaries[value]["accuracy"], summaries[value]["mean_tokens"]

    def after(point: Point) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{cfg.param}={value_text(point.value)}: {100 * point.accuracy:.1f}%, "
                            f"{point.tokens:.1f} tokens")
        done = [Point(v, s["accuracy"], s["mean_tokens"]) for v, s in summaries.items()]
        runner.release(summaries, keep={p.value for p in front(done)})  # off the front: never tested

    try:
        result = search(objective, cfg.low, cfg.high, cfg.budget, cfg.resolution, cfg.integer, cfg.grid, after)
    finally:
        bar.close()
    dev_front = front(result.points)
    tests = {}
    for p in tqdm(dev_front, desc=f"sweep {cfg.param} (test)", unit="eval", disable=not progress):
        tests[p.value] = runner.evaluate(p.value, cfg.test_split)
    runner.release(summaries)
    on_front = {p.value for p in dev_front}
    points = [{"value": p.value, "order": p.order, "params": cfg.merge_params(p.value), "on_front": p.value in on_front,
               "dev": summaries[p.value],
               "dev_run": runner.point_dir(p.value, cfg.dev_split), "test": tests.get(p.value),
               "test_run": runner.point_dir(p.value, cfg.test_split) if p.value in tests else None}
              for p in sorted(result.points, key=lambda p: p.value)]
    record = {"kind": "sweep", "config": cfg.key(), "method": cfg.method, "param": cfg.param,
              "search": "grid" if cfg.grid is not None else "adaptive", "budget": cfg.budget, "stopped": result.stopped,
              "points": points, "choices": result.choices,
              "front": [p.value for p in dev_front],
              "n_evaluations": {"dev": len(result.points), "test": len(tests)},
              "inputs": runner.inputs, "comparison": None if reference is None else {
                  "reference_run": str(cfg.reference_run), "reference_search": reference["search"],
                  **compare_fronts(result.points, _points_of(reference))}}
    io.atomic_write_json(runner.out / RECORD, record)
    if runner.ran or not (runner.out / PROVENANCE).is_file():
        io.atomic_write_json(runner.out / PROVENANCE, provenance(seed=cfg.seed, evaluations_run=runner.ran))
    return record


# -- reading a sweep --------------------------------------------------------------------------------------
def points_table(record: dict[str, Any]):
    """One row per evaluated value (in value order): evaluation order, dev accuracy (%) and mean tokens,
    whether it is on the dev front, and the front's test accuracy (%) and mean tokens."""
    import pandas as pd

    rows = []
    for p in record["points"]:
        test = p["test"] or {}
        rows.append({record["param"]: p["value"], "order": p["order"], "dev accuracy %": 100 * p["dev"]["accuracy"],
                     "dev mean tokens": p["dev"]["mean_tokens"], "on front": p["on_front"],
                     "test accuracy %": 100 * test["accuracy"] if test else None,
                     "test mean tokens": test.get("mean_tokens")})
    return pd.DataFrame(rows).set_index(record["param"]).round(2)


def reading(record: dict[str, Any]) -> str:
    """A paragraph from the numbers of a sweep: what was evaluated, the front, its test results and the
    comparison with the reference run."""
    param, pts = record["param"], {p["value"]: p for p in record["points"]}
    order = [p["value"] for p in sorted(record["points"], key=lambda p: p["order"])]
    n = record["n_evaluations"]
    how = (f"an evenly spaced grid of {n['dev']} values" if record["search"] == "grid" else
           f"{n['dev']} dev evaluations of a budget of {record['budget']} (stopped by {record['stopped']})")
    parts = [f"The sweep of **{param}** for `{record['method']}` used {how}, in the order "
             f"{', '.join(value_text(v) for v in order)}."]
    front_text = "; ".join(f"{param}={value_text(v)}: {100 * pts[v]['dev']['accuracy']:.1f}% at "
                           f"{pts[v]['dev']['mean_tokens']:.1f} tokens" for v in record["front"])
    parts.append(f"Its dev front ({len(record['front'])} of {n['dev']} points, shortest first): {front_text}.")
    tested = [v for v in record["front"] if pts[v]["test"]]
    if tested:
        parts.append("On the test split the front gives " + "; ".join(
            f"{param}={value_text(v)}: {100 * pts[v]['test']['accuracy']:.1f}% at "
            f"{pts[v]['test']['mean_tokens']:.1f} tokens" for v in tested) + ".")
    cmp = record.get("comparison")
    if cmp:
        ratio = cmp["hypervolume_ratio"]
        parts.append(f"Against the {cmp['reference_search']} run {cmp['reference_run']} "
                     f"({cmp['reference_evaluations']} dev evaluations, front "
                     f"{', '.join(value_text(v) for v in cmp['reference_front'])}), every point of its front lies "
                     f"within {cmp['max_distance']:.3f} (mean {cmp['mean_distance']:.3f}) of this front in "
                     f"(accuracy, relative length), and this front's hypervolume is "
                     + (f"{100 * ratio:.1f}% of the reference's." if ratio is not None else
                        "not comparable (the reference's is 0)."))
    parts.append("A value off the front is beaten by another on both accuracy and length; only front points "
                 "are evaluated on the test split, so the search never sees the test problems.")
    return " ".join(parts)


FIGURE = "sweep_front"


def draw_front(record: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """``out_dir/sweep_front.{csv,png,pdf}``: the sweep's points and front
    (:func:`l2s.figures.tables.sweep_points`, :func:`l2s.figures.plots.sweep_front`), beside its reference
    sweep's dev points when it was compared with one."""
    from l2s.figures.plots import sweep_front
    from l2s.figures.style import save
    from l2s.figures.tables import sweep_points

    cmp = record.get("comparison")
    table = sweep_points(record, read_sweep(cmp["reference_run"]) if cmp else None)
    return save(sweep_front(table), table, Path(out_dir), FIGURE)


# -- command line -----------------------------------------------------------------------------------------
FLAG_FIELDS = ("out", "method", "param", "low", "high", "budget", "grid", "resolution", "models_run", "quick", "slow",
               "short", "size", "calibration_samples", "datasets", "data_dir", "dev_split", "test_split", "prompt",
               "max_new_tokens", "backend", "batch_size", "tensor_parallel_size", "data_parallel_size",
               "max_model_len", "gpu_memory_utilization", "dtype", "seed", "reference_run", "plot", "keep_merges")


def register(sub: argparse._SubParsersAction) -> None:
    from l2s.config import add_flags

    p = sub.add_parser("sweep", help="search one merge hyper-parameter for the accuracy-length Pareto front",
                       description="Search one hyper-parameter of a merge method over [low, high] for the front of "
                                   "accuracy vs response length on a dev split, in at most --budget evaluations "
                                   "(or a --grid of N values), then evaluate the front on the test split. "
                                   "Example: l2s sweep --models-run runs/toy-s-models --method task_arithmetic "
                                   "--param alpha --low 0.1 --high 1.0 --out runs/toy-s-ta-sweep. Flags override "
                                   "--config.")
    p.add_argument("--config", type=Path, help="YAML or JSON file of SweepConfig fields; flags override it")
    p.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                   help="a fixed hyper-parameter of the method (repeatable; added to the file's params)")
    p.add_argument("--calibration", help="AIM / Sens-Merging calibration: toy, s1k or comma-separated files")
    add_flags(p, "l2s.sweep:SweepConfig", FLAG_FIELDS, help={
        "out": "the sweep's run directory (rerun to resume)", "method": "merge method string, e.g. task_arithmetic",
        "param": "the hyper-parameter to sweep, e.g. alpha", "low": "lowest value", "high": "highest value",
        "budget": "dev evaluations of the search (default 5)", "grid": "evaluate N evenly spaced values instead",
        "resolution": "do not split intervals narrower than twice this (default (high-low)/64; 1 for integers)",
        "models_run": "a run of 00_models", "reference_run": "a sweep run (e.g. a grid) to compare the front with",
        "plot": "tag the front's test runs for the figures (default true)",
        "keep_merges": "keep the merged checkpoints in the cache (default: deleted once evaluated)"})
    p.set_defaults(func=run)


def config_from_args(args) -> SweepConfig:
    """The ``--config`` file's fields, overridden by the flags given (``--fixed`` adds to ``params``)."""
    from l2s.cli import UserError
    from l2s.config import merge, options_from_args, parse, where_of
    from l2s.merge.config import parse_assignments

    options = options_from_args(SweepConfig, args)
    if args.calibration:
        files = [c for c in args.calibration.split(",") if c]
        options["calibration"] = files[0] if len(files) == 1 else files
    fixed = parse_assignments(args.fixed, "--fixed")
    options = merge(options, {"params": fixed}) if fixed else options
    missing = [k for k in ("out", "method", "param", "low", "high") if options.get(k) is None]
    if missing:
        raise UserError(f"missing {', '.join('--' + k.replace('_', '-') for k in missing)} (or give them in --config)")
    return parse(SweepConfig, options, where_of(args))


def run(args) -> int:
    cfg = config_from_args(args)
    record = run_sweep(cfg)
    print(points_table(record).to_string())
    print(Path(cfg.out) / RECORD)
    return 0
