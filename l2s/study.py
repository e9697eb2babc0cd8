"""``l2s study``: the study's notebooks run with papermill as steps with declared inputs and outputs.

A study config (YAML) lists steps; each step is a notebook, its parameters and the run directory it
produces. A step may carry a ``grid`` (name -> list of values): it expands into one step per
combination, and ``{name}`` in ``run_dir``, ``name`` or a string parameter is filled in (a parameter
that is exactly ``"{name}"`` or ``"{name[key]}"`` takes the value itself, keeping its type: number,
list or mapping)::

    name: toy
    runs_dir: runs                        # every run_dir lies under it
    figures_dir: figures
    parameters: {seed: 0}                 # given to every step
    steps:
      - notebook: notebooks/01_merge.ipynb
        run_dir: runs/{size}-merge-{merge[method]}
        grid:
          size: [toy-s, toy-m]
          merge: [{method: ties, params: {k: 0.8}}, {method: dare, params: {p: 0.3}}]
        parameters: {models_run: "runs/{size}-models", method: "{merge[method]}", params: "{merge[params]}"}

**Dependencies** come from the parameters: a parameter whose value is another step's ``run_dir``
consumes that step (its records and the cache artifacts it made, e.g. checkpoints); a parameter that
names a directory above other steps' run dirs (the figures' ``runs_dir: runs``) reads their records
only. ``needs: [glob, ...]`` adds dependencies the parameters do not show. A step's inputs are its
parameters, its notebook's digest, the digests of input files its parameters name, and its upstream
steps' inputs; :mod:`l2s.pipeline` reruns a step when they change, and everything downstream with it,
and rebuilds a finished step whose cache artifacts are gone when a step that needs them runs. The
code of ``l2s`` itself is not an input (every edit would rerun everything): after a change that
alters results, ``--rerun PATTERN`` reruns the matching steps and everything downstream.

Each step runs with papermill (working directory: the directory ``l2s study`` runs in, progress bars
off); the notebook also receives ``run_dir``. The executed notebook is written beside the run
directory while it runs; on success it moves into the run directory and ``study_step.json`` (the
marker: inputs hash, parameters, artifacts) is written atomically, last. A stale step's run directory
is cleared before it reruns; an interrupted one resumes in place. A failed step keeps its executed
notebook as ``<run_dir>.failed.ipynb``.

``--out DIR`` runs the whole study into ``DIR`` (``DIR/runs``, ``DIR/figures``: every path under
``runs_dir`` or ``figures_dir``, in run dirs and parameters alike, moves there) — ``make study`` does
this in ``.study/`` and, with ``--compare runs``, ends with a reproduction report of the new runs
against the committed ones (:mod:`l2s.reproduce`).
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import itertools
import logging
import os
import re
import string
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from l2s import pipeline
from l2s.provenance import file_sha256

log = logging.getLogger(__name__)

MARKER = "study_step.json"
INPUT_FILE_MAX_BYTES = 64 << 20  # input files up to this size are part of a step's inputs by digest


@dataclass
class StepSpec:
    """One entry of ``steps:`` as written in the config (before grid expansion)."""

    notebook: str
    run_dir: str
    parameters: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    name: str | None = None
    needs: list[str] = field(default_factory=list)  # globs of step names this one depends on besides its parameters
    always: bool = False  # rerun on every study run


@dataclass
class StudyConfig:
    """A study: steps in dependency order; ``parameters`` are given to every step (a step's own win)."""

    steps: list[StepSpec]
    name: str = "study"
    parameters: dict[str, Any] = field(default_factory=dict)
    runs_dir: str = "runs"
    figures_dir: str | None = None
    kernel: str | None = None
    cell_timeout_s: int | None = None


@dataclass(frozen=True)
class Step:
    """One notebook execution: what it runs, with which parameters, where its run lands, and which
    earlier steps it consumes (``deps``) or reads (``reads``)."""

    name: str
    notebook: Path
    run_dir: Path
    parameters: dict[str, Any]
    always: bool = False
    deps: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()

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

    def key(self) -> dict[str, Any]:
        """What the step's outputs are a function of (besides its upstream steps)."""
        return {"notebook": self.notebook.as_posix(),
                "notebook_sha256": file_sha256(self.notebook) if self.notebook.is_file() else None,
                "parameters": self.parameters, "input_files": _input_files(self.parameters)}


def _strings(value: Any):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _input_files(parameters: dict[str, Any]) -> dict[str, str]:
    """Digests of the (not too large) files a step's parameters name: their content is an input."""
    out = {}
    for s in _strings({k: v for k, v in parameters.items() if k != "run_dir"}):
        p = Path(s)
        if len(s) < 512 and "\n" not in s and p.is_file() and p.stat().st_size <= INPUT_FILE_MAX_BYTES:
            out[s] = file_sha256(p)
    return dict(sorted(out.items()))


def load_config(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study YAML file (types checked, unknown keys named: :mod:`l2s.config`)."""
    from l2s.config import ConfigError, load_yaml

    path = Path(path)
    config = load_yaml(StudyConfig, path)
    if not config.steps:
        raise ConfigError(f"{path}: 'steps' must be a non-empty list")
    for i, s in enumerate(config.steps):
        for var, values in s.grid.items():
            if not values:
                raise ConfigError(f"{path}: steps[{i}].grid.{var} must be a non-empty list")
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


def _rebase(value: Any, roots: dict[str, str]) -> Any:
    """Move every string that is one of ``roots`` (old -> new) or lies under it (recursively)."""
    if isinstance(value, dict):
        return {k: _rebase(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [_rebase(v, roots) for v in value]
    if isinstance(value, str):
        for old, new in roots.items():
            if value == old or value.startswith(old + "/"):
                return new + value[len(old):]
    return value


def _under(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(PurePosixPath(root))


def expand(config: StudyConfig, out: str | os.PathLike | None = None) -> list[Step]:
    """All steps in order, grids expanded (cartesian product, in the order written), dependencies
    resolved; with ``out``, every path under the runs and figures roots moved into ``out``."""
    roots = {}
    if out is not None:
        out = PurePosixPath(Path(out).as_posix())
        roots = {config.runs_dir.rstrip("/"): (out / config.runs_dir).as_posix()}
        if config.figures_dir:
            roots[config.figures_dir.rstrip("/")] = (out / config.figures_dir).as_posix()
    expanded: list[tuple[Step, list[str], str]] = []
    for i, spec in enumerate(config.steps):
        names = list(spec.grid)
        for combo in itertools.product(*(spec.grid[n] for n in names)):
            env = dict(zip(names, combo))
            where = f"steps[{i}]" + (f" with {env}" if env else "")
            run_dir = _rebase(_fill(spec.run_dir, env, where), roots)
            params = _rebase({**_fill(config.parameters, env, where), **_fill(spec.parameters, env, where)}, roots)
            params.setdefault("run_dir", run_dir)
            name = _fill(spec.name, env, where) if spec.name else Path(run_dir).name
            expanded.append((Step(name=name, notebook=Path(spec.notebook), run_dir=Path(run_dir),
                                  parameters=params, always=spec.always), spec.needs, where))
    steps = [s for s, _, _ in expanded]
    for attr in ("name", "run_dir"):
        seen: dict = {}
        for s in steps:
            if getattr(s, attr) in seen:
                raise ValueError(f"two steps share the {attr} {getattr(s, attr)} "
                                 f"({seen[getattr(s, attr)]} and {s.name}); each step needs its own")
            seen[getattr(s, attr)] = s.name
    return [_with_edges(s, steps[:n], steps[n + 1:], needs, where)
            for n, (s, needs, where) in enumerate(expanded)]


def _with_edges(step: Step, before: list[Step], after: list[Step], needs: list[str], where: str) -> Step:
    inputs = {k: v for k, v in step.parameters.items() if k != "run_dir"}
    values = {PurePosixPath(v).as_posix() for v in _strings(inputs) if v and len(v) < 512 and "\n" not in v}
    deps = [u.name for u in before if any(_under(v, u.run_dir.as_posix()) for v in values)]
    for pattern in needs:
        matched = [u.name for u in before if fnmatch.fnmatchcase(u.name, pattern)]
        if not matched:
            raise ValueError(f"{where}: needs {pattern!r} matches no earlier step")
        deps += [m for m in matched if m not in deps]
    later = [u.name for u in after if any(_under(v, u.run_dir.as_posix()) for v in values)]
    if later:
        raise ValueError(f"{where}: step {step.name} uses the run of {', '.join(later)}, which comes later; "
                         "list steps after the steps they use")
    reads = [u.name for u in before if u.name not in deps and any(_under(u.run_dir.as_posix(), v) for v in values)]
    return Step(step.name, step.notebook, step.run_dir, step.parameters, step.always, tuple(deps), tuple(reads))


def select(steps: list[Step], only: list[str] | None) -> list[Step]:
    """Steps whose name matches any of the ``only`` glob patterns (all steps when none given)."""
    if not only:
        return steps
    patterns = [p for item in only for p in item.split(",") if p]
    chosen = [s for s in steps if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]
    if not chosen:
        raise ValueError(f"--only {','.join(patterns)} matches no step; steps: {', '.join(s.name for s in steps)}")
    return chosen


@contextmanager
def _quiet_progress():
    """Progress bars off in the kernels papermill starts (they inherit the environment): executed
    notebooks keep their results, not thousands of progress updates."""
    saved = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        os.environ.pop("TQDM_DISABLE") if saved is None else os.environ.__setitem__("TQDM_DISABLE", saved)


def run_step(step: Step, kernel: str | None = None, cell_timeout_s: int | None = None) -> list[str]:
    """Execute one step with papermill; on success move the executed notebook into the run directory.
    On failure keep the executed notebook beside the run. Returns the cache artifacts the run
    declared (:func:`l2s.pipeline.declared_artifacts`)."""
    import papermill

    if not step.notebook.is_file():
        raise FileNotFoundError(f"step {step.name}: notebook {step.notebook} not found")
    step.running_notebook.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _quiet_progress():
            papermill.execute_notebook(
                str(step.notebook), str(step.running_notebook), parameters=step.parameters,
                kernel_name=kernel, progress_bar=False, log_output=False, cwd=os.getcwd(),
                execution_timeout=cell_timeout_s)
    except BaseException:
        if step.running_notebook.exists():
            os.replace(step.running_notebook, step.failed_notebook)
        raise
    _unpair(step.running_notebook)
    step.run_dir.mkdir(parents=True, exist_ok=True)
    os.replace(step.running_notebook, step.executed_notebook)
    step.failed_notebook.unlink(missing_ok=True)
    return pipeline.declared_artifacts(step.run_dir)


def _unpair(path: Path) -> None:
    """Drop the jupytext pairing from an executed copy: saved in JupyterLab, it would write a .py beside it."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if nb.metadata.pop("jupytext", None) is not None:
        nbformat.write(nb, path)


def tasks(steps: list[Step], kernel: str | None = None, cell_timeout_s: int | None = None) -> list[pipeline.Task]:
    """The study's steps as :class:`l2s.pipeline.Task` s."""
    return [pipeline.Task(
        name=s.name, key=s.key(), marker=s.marker, outputs=(s.executed_notebook,), deps=s.deps, reads=s.reads,
        always=s.always, work=lambda s=s: run_step(s, kernel, cell_timeout_s),
        before_rerun=pipeline.clear_when_stale(s.run_dir),
        info={"step": s.name, "notebook": s.notebook.as_posix(), "run_dir": s.run_dir.as_posix(),
              "parameters": s.parameters}) for s in steps]


def states(steps: list[Step]) -> dict[str, str]:
    """Each step's state (``pending``, ``stale``, ``missing`` or ``done``: :mod:`l2s.pipeline`)."""
    ts = tasks(steps)
    hashes = pipeline.input_hashes(ts)
    return {t.name: pipeline.state_of(t, hashes[t.name]) for t in ts}


Outcome = pipeline.Outcome


def run_study(config: StudyConfig, only: list[str] | None = None, dry_run: bool = False,
              keep_going: bool = False, out: str | os.PathLike | None = None,
              rerun: list[str] | None = None, jobs: int = 1) -> list[Outcome]:
    """Run what is not done (see the module docstring) in order; stop at the first failure unless
    ``keep_going``; ``rerun`` (globs): steps to rerun whatever their state, with everything downstream;
    ``jobs``: steps run at once, each when the steps it uses and reads have finished.
    Returns one outcome per selected step (and per upstream step that had to run)."""
    from tqdm.auto import tqdm

    steps = expand(config, out)
    chosen = select(steps, only)
    missing = sorted({s.notebook.as_posix() for s in steps if not s.notebook.is_file()})
    if missing:
        raise FileNotFoundError(f"notebook(s) not found: {', '.join(missing)}")

    def progress(ts):
        bar = tqdm(ts, desc=f"study {config.name}", unit="step")
        for t in bar:
            bar.set_postfix_str(t.name)
            yield t

    forced = [s.name for s in select(steps, rerun)] if rerun else []
    return pipeline.run(tasks(steps, config.kernel, config.cell_timeout_s),
                        selected=None if only is None else [s.name for s in chosen],
                        keep_going=keep_going, progress=progress, dry_run=dry_run, force=forced, jobs=jobs)


def _where(o: Outcome) -> Path:
    run_dir = Path(o.task.info["run_dir"])
    return run_dir.with_name(f"{run_dir.name}.failed.ipynb") if o.state == "failed" else run_dir


def summary(config: StudyConfig, outcomes: list[Outcome], dry_run: bool = False,
            out: str | os.PathLike | None = None) -> str:
    """Plain-text table of steps (state, why it ran, time, run directory) and the figures that exist."""
    order = ("ran", "done", "pending", "stale", "missing", "failed", "not run")
    lines = [f"study {config.name}: " + ", ".join(
        f"{n} {state}" for state in order if (n := sum(o.state == state for o in outcomes)))]
    width = max(len(o.task.name) for o in outcomes)
    for o in outcomes:
        took = f"{o.seconds:7.1f}s" if o.seconds else " " * 8
        why = f"  ({o.reason})" if o.reason else ""
        lines.append(f"  {o.state:8s} {o.task.name:{width}s} {took}  {_where(o)}{why}")
        if o.error:
            lines.append(f"           error: {o.error}")
    figures_dir = config.figures_dir
    if figures_dir and out is not None:
        figures_dir = (Path(out) / figures_dir).as_posix()
    if figures_dir and not dry_run:
        figures = sorted(Path(figures_dir).glob("*.png")) if Path(figures_dir).is_dir() else []
        lines.append(f"figures in {figures_dir}: " + (", ".join(p.name for p in figures) or "none yet"))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("study", help="run the study's notebooks with papermill (resumable)",
                       description="Run every step of a study config (notebook + parameters -> run "
                                   "directory) with papermill: steps whose inputs changed rerun with "
                                   "everything downstream; finished steps are skipped.")
    p.add_argument("--config", type=Path, default=Path("configs/toy.yaml"),
                   help="study YAML (default configs/toy.yaml)")
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help="run only steps whose name matches this glob (repeatable or comma-separated), and "
                        "the upstream steps they need")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="run the study into DIR (DIR/runs, DIR/figures) instead of the config's own paths")
    p.add_argument("--compare", type=Path, metavar="RUNS_DIR",
                   help="end with a reproduction report: the runs made against those in RUNS_DIR")
    p.add_argument("--rerun", action="append", metavar="PATTERN",
                   help="rerun the steps matching this glob whatever their state, and everything downstream "
                        "(after a change to l2s's code, which is not one of a step's inputs)")
    p.add_argument("--dry-run", action="store_true", help="list the steps, their state and dependencies; run nothing")
    p.add_argument("--keep-going", action="store_true", help="after a failed step, go on with the others")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="run up to N steps at once, each when the steps it needs have finished (default 1; "
                        "on a CPU, about one per core: the toy steps use one thread each)")
    p.set_defaults(func=run)


def run(args) -> int:
    config = load_config(args.config)
    if args.compare is not None and not args.compare.is_dir():  # before the study runs, not after it
        raise FileNotFoundError(f"--compare {args.compare}: no such runs directory (the committed runs are in runs/)")
    if args.jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
    outcomes = run_study(config, only=args.only, dry_run=args.dry_run, keep_going=args.keep_going, out=args.out,
                         rerun=args.rerun, jobs=args.jobs)
    if args.dry_run:
        for o in outcomes:
            i = o.task.info
            edges = "".join(f" {k}: {', '.join(v)}" for k, v in (("uses", o.task.deps), ("reads", o.task.reads)) if v)
            print(f"{o.state:8s} {o.task.name}: {i['notebook']} -> {i['run_dir']} {i['parameters']}"
                  + (f" [{o.reason}]" if o.reason else "") + (f" ({edges.strip()})" if edges else ""))
    print(summary(config, outcomes, dry_run=args.dry_run, out=args.out))
    failed = any(o.state == "failed" for o in outcomes)
    if args.compare is not None and not args.dry_run:
        from l2s.reproduce import compare_runs, write_report

        runs_dir = Path(args.out) / config.runs_dir if args.out is not None else Path(config.runs_dir)
        report = compare_runs(runs_dir, args.compare)
        print(write_report(report, runs_dir.parent / "reproduction"))
    return 1 if failed else 0


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
