"""``l2s study``: run a grid of parameterized notebooks with papermill, resumably.

A study config (YAML) lists steps; each step is a notebook, its parameters and the run directory it
produces. A step may carry a ``grid`` (name -> list of values): it expands into one step per
combination, and ``{name}`` in ``run_dir``, ``name`` or a string parameter is filled in (a parameter
that is exactly ``"{name}"`` or ``"{name[key]}"`` takes the value itself, keeping its type: number,
list or mapping)::

    name: toy
    figures_dir: figures
    parameters: {seed: 0}                 # given to every step
    steps:
      - notebook: notebooks/02_merge.ipynb
        run_dir: runs/{size}-{merge[method]}
        grid:
          size: [toy-s, toy-m]
          merge: [{method: ties, k: 0.8}, {method: dare, p: 0.3}]
        parameters: {size: "{size}", merge: "{merge}"}

Each step runs with papermill (working directory: the directory ``l2s study`` runs in); the notebook
also receives ``run_dir``. While it runs, the executed notebook is written beside the run directory;
on success it moves into the run directory and ``study_step.json`` (the completion marker) is written
atomically, last. A step whose marker exists is skipped, so an interrupted study resumes where it
stopped (a step with ``always: true``, such as the figures, runs every time). A failed step keeps its executed notebook as ``<run_dir>.failed.ipynb`` for reading and leaves
every finished step alone.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import fnmatch
import itertools
import logging
import os
import re
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s.io import atomic_write_json, read_json
from l2s.provenance import config_hash, file_sha256

log = logging.getLogger(__name__)

MARKER = "study_step.json"


@dataclass
class StepSpec:
    """One entry of ``steps:`` as written in the config (before grid expansion)."""

    notebook: str
    run_dir: str
    parameters: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    name: str | None = None
    always: bool = False  # rerun on every study run (e.g. the figures step, which reads all runs)


@dataclass
class StudyConfig:
    """A study: steps run in order; ``parameters`` are given to every step (a step's own win)."""

    steps: list[StepSpec]
    name: str = "study"
    parameters: dict[str, Any] = field(default_factory=dict)
    figures_dir: str | None = None
    kernel: str | None = None
    cell_timeout_s: int | None = None


@dataclass(frozen=True)
class Step:
    """One notebook execution: what it runs, with which parameters, and where its run lands."""

    name: str
    notebook: Path
    run_dir: Path
    parameters: dict[str, Any]
    always: bool = False

    @property
    def marker(self) -> Path:
        return self.run_dir / MARKER

    @property
    def executed_notebook(self) -> Path:
        return self.run_dir / self.notebook.name

    @property
    def failed_notebook(self) -> Path:
        return self.run_dir.with_name(f"{self.run_dir.name}.failed.ipynb")

    @property
    def running_notebook(self) -> Path:
        return self.run_dir.with_name(f".{self.run_dir.name}.running.ipynb")

    def record(self) -> dict[str, Any]:
        """What the completion marker says: enough to tell whether the step is still up to date."""
        return {"step": self.name, "notebook": self.notebook.as_posix(), "run_dir": self.run_dir.as_posix(),
                "parameters": self.parameters, "parameters_hash": config_hash(self.parameters),
                "notebook_sha256": file_sha256(self.notebook) if self.notebook.is_file() else None}


def _typed(cls, data: Any, where: str):
    """Build dataclass ``cls`` from a mapping, naming unknown or missing keys."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(fields)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}")
    return cls(**data)


def load_config(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study YAML file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study config {path} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    config = _typed(StudyConfig, data, str(path))
    if not isinstance(config.steps, list) or not config.steps:
        raise ValueError(f"{path}: 'steps' must be a non-empty list")
    config.steps = [_typed(StepSpec, s, f"{path}: steps[{i}]") for i, s in enumerate(config.steps)]
    for i, s in enumerate(config.steps):
        if not isinstance(s.parameters, dict) or not isinstance(s.grid, dict):
            raise ValueError(f"{path}: steps[{i}]: 'parameters' and 'grid' must be mappings")
        for var, values in s.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{path}: steps[{i}].grid.{var} must be a non-empty list")
    return config


_WHOLE = re.compile(r"^\{(\w+)((?:\[[^\[\]]+\])*)\}$")  # "{name}" or "{name[key]...}"


def _fill(value: Any, env: dict[str, Any], where: str) -> Any:
    """Substitute grid variables into a parameter value (recursively through lists and mappings)."""
    if isinstance(value, dict):
        return {k: _fill(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, env, where) for v in value]
    if not isinstance(value, str):
        return value
    m = _WHOLE.match(value)
    if m and m.group(1) in env:
        obj = env[m.group(1)]
        for key in re.findall(r"\[([^\[\]]+)\]", m.group(2)):
            try:
                obj = obj[int(key)] if isinstance(obj, list) else obj[key]
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise ValueError(f"{where}: {value!r}: no item {key!r} in {obj!r}") from e
        return copy.deepcopy(obj)
    try:
        return value.format(**env)
    except (KeyError, IndexError) as e:
        names = [f for _, f, _, _ in string.Formatter().parse(value) if f]
        raise ValueError(f"{where}: {value!r} uses {e} which is not a grid variable "
                         f"(grid: {', '.join(sorted(env)) or 'none'}; fields: {', '.join(names)})") from e


def expand(config: StudyConfig) -> list[Step]:
    """All steps in order, grids expanded (cartesian product, in the order written)."""
    steps: list[Step] = []
    for i, spec in enumerate(config.steps):
        names = list(spec.grid)
        for combo in itertools.product(*(spec.grid[n] for n in names)):
            env = dict(zip(names, combo))
            where = f"steps[{i}]" + (f" with {env}" if env else "")
            run_dir = Path(_fill(spec.run_dir, env, where))
            params = {**_fill(config.parameters, env, where), **_fill(spec.parameters, env, where)}
            params.setdefault("run_dir", run_dir.as_posix())
            name = _fill(spec.name, env, where) if spec.name else run_dir.name
            steps.append(Step(name=name, notebook=Path(spec.notebook), run_dir=run_dir, parameters=params,
                              always=bool(spec.always)))
    for attr in ("name", "run_dir"):
        seen: dict = {}
        for s in steps:
            if getattr(s, attr) in seen:
                raise ValueError(f"two steps share the {attr} {getattr(s, attr)} "
                                 f"({seen[getattr(s, attr)]} and {s.name}); each step needs its own")
            seen[getattr(s, attr)] = s.name
    return steps


def select(steps: list[Step], only: list[str] | None) -> list[Step]:
    """Steps whose name matches any of the ``only`` glob patterns (all steps when none given)."""
    if not only:
        return steps
    patterns = [p for item in only for p in item.split(",") if p]
    chosen = [s for s in steps if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"--only {','.join(patterns)} matches no step; steps: {', '.join(s.name for s in steps)}")
    return chosen


def status(step: Step) -> str:
    """"done", "stale" (done, but with other parameters or another notebook version) or "pending"."""
    if not step.marker.is_file():
        return "pending"
    done = read_json(step.marker)
    now = step.record()
    same = done.get("parameters_hash") == now["parameters_hash"] and done.get("notebook_sha256") in (
        None, now["notebook_sha256"])
    return "done" if same else "stale"


def run_step(step: Step, kernel: str | None = None, cell_timeout_s: int | None = None) -> None:
    """Execute one step with papermill; on success move the executed notebook into the run directory
    and write the completion marker last. On failure keep the executed notebook beside the run."""
    import papermill

    if not step.notebook.is_file():
        raise FileNotFoundError(f"step {step.name}: notebook {step.notebook} not found")
    step.running_notebook.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(step.notebook), str(step.running_notebook), parameters=step.parameters,
            kernel_name=kernel, progress_bar=False, log_output=False, cwd=os.getcwd(),
            execution_timeout=cell_timeout_s)
    except BaseException:
        if step.running_notebook.exists():
            os.replace(step.running_notebook, step.failed_notebook)
        raise
    step.run_dir.mkdir(parents=True, exist_ok=True)
    os.replace(step.running_notebook, step.executed_notebook)
    step.failed_notebook.unlink(missing_ok=True)
    atomic_write_json(step.marker, step.record())


@dataclass
class Outcome:
    step: Step
    state: str  # "done" (skipped), "ran", "failed", "not run"
    seconds: float = 0.0
    error: str = ""


def run_study(config: StudyConfig, only: list[str] | None = None, dry_run: bool = False,
              keep_going: bool = False) -> list[Outcome]:
    """Run every pending step in order (skipping finished ones); stop at the first failure unless
    ``keep_going``. Returns one outcome per selected step."""
    from tqdm.auto import tqdm

    steps = select(expand(config), only)
    missing = sorted({s.notebook.as_posix() for s in steps if not s.notebook.is_file()})
    if missing:
        raise FileNotFoundError(f"notebook(s) not found: {', '.join(missing)}")
    outcomes = []
    if dry_run:
        for s in steps:
            outcomes.append(Outcome(s, status(s)))
        return outcomes
    failed = False
    bar = tqdm(steps, desc=f"study {config.name}", unit="step")
    for s in bar:
        bar.set_postfix_str(s.name)
        state = status(s)
        if state == "stale":
            log.warning("study: %s was finished with other parameters or another notebook version; "
                        "keeping it (delete %s to rerun)", s.name, s.marker)
        if (state in ("done", "stale") and not s.always) or (failed and not keep_going):
            outcomes.append(Outcome(s, state if state != "pending" else "not run"))
            continue
        t0 = time.perf_counter()
        try:
            run_step(s, kernel=config.kernel, cell_timeout_s=config.cell_timeout_s)
        except Exception as e:  # a failed notebook (or kernel) must not stop the summary
            failed = True
            detail = str(e).strip().splitlines()
            log.error("study: step %s failed; executed notebook: %s", s.name, s.failed_notebook)
            outcomes.append(Outcome(s, "failed", time.perf_counter() - t0, detail[-1] if detail else repr(e)))
            continue
        outcomes.append(Outcome(s, "ran", time.perf_counter() - t0))
    bar.close()
    return outcomes


def summary(config: StudyConfig, outcomes: list[Outcome], dry_run: bool = False) -> str:
    """Plain-text table of steps (state, time, run directory) and the figures that exist."""
    lines = [f"study {config.name}: " + ", ".join(
        f"{n} {state}" for state in ("ran", "done", "stale", "pending", "failed", "not run")
        if (n := sum(o.state == state for o in outcomes)))]
    width = max(len(o.step.name) for o in outcomes)
    for o in outcomes:
        where = o.step.failed_notebook if o.state == "failed" else o.step.run_dir
        took = f"{o.seconds:7.1f}s" if o.seconds else " " * 8
        lines.append(f"  {o.state:8s} {o.step.name:{width}s} {took}  {where}")
        if o.error:
            lines.append(f"           error: {o.error}")
    if config.figures_dir and not dry_run:
        figures = sorted(Path(config.figures_dir).glob("*.png")) if Path(config.figures_dir).is_dir() else []
        lines.append(f"figures in {config.figures_dir}: " + (", ".join(p.name for p in figures) or "none yet"))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run the study's notebooks with papermill (resumable)",
                       description="Run every step of a study config (notebook + parameters -> run "
                                   "directory) with papermill, skipping finished steps.")
    p.add_argument("--config", type=Path, default=Path("configs/toy.yaml"), help="study YAML (default configs/toy.yaml)")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only steps whose name matches this glob (repeatable or comma-separated)")
    p.add_argument("--dry-run", action="store_true", help="list the steps and their state; run nothing")
    p.add_argument("--keep-going", action="store_true", help="after a failed step, go on with the others")
    p.set_defaults(func=run)


def run(args) -> int:
    config = load_config(args.config)
    outcomes = run_study(config, only=args.only, dry_run=args.dry_run, keep_going=args.keep_going)
    if args.dry_run:
        for o in outcomes:
            print(f"{o.state:8s} {o.step.name}: {o.step.notebook} -> {o.step.run_dir} {o.step.parameters}")
    print(summary(config, outcomes, dry_run=args.dry_run))
    return 1 if any(o.state == "failed" for o in outcomes) else 0


def check_notebook(path: str | os.PathLike) -> list[str]:
    """Problems that keep a notebook from being committed: outputs or execution counts left in code
    cells, and not exactly one cell tagged ``parameters`` (papermill injects after it)."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as e:  # nbformat raises several types for unreadable files
        return [f"{path}: not a readable notebook ({e})"]
    problems = []
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        problems.append(f"{path}: {len(tagged)} cells tagged 'parameters' (need exactly one)")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"{path}: cell {i} has outputs or an execution count (clear outputs before committing)")
    return problems
