"""Tasks with declared inputs and outputs, run in dependency order: the one runner behind the study's
notebook steps (:mod:`l2s.study`) and Ada-R1's stages (:mod:`l2s.adar1`).

A task's **input hash** is the hash of its ``key`` (what its outputs are a function of: parameters,
notebook or config, input files' digests) and of the input hashes of the tasks it depends on. When a
task finishes, its marker (a JSON file, written atomically and last) records that hash and the
**artifacts** the work reported (cache paths outside the task's own directory, e.g. checkpoints). A
task is

- ``pending``  without a marker (never ran, or was interrupted: it runs and resumes its own work);
- ``stale``    when the recorded hash differs — its key or anything upstream changed; it reruns, and
  since its hash is part of theirs, so does everything downstream;
- ``missing``  when an output or artifact it recorded is gone. Artifacts are rebuilt **on demand**: a
  task that must run first reruns every ``deps`` task whose artifacts are missing (recursively). A
  task read through ``reads`` only (e.g. the figures read run records, not checkpoints) is never
  rebuilt for that. Rebuilding is deterministic: same inputs, same seed, same bytes.
- ``done``     otherwise.

A hand-written runner rather than Snakemake or another workflow engine: see the README ("Why not
Snakemake"). It is a few pure functions over a list of tasks in dependency order.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from l2s.io import atomic_write_json, read_json
from l2s.provenance import config_hash

log = logging.getLogger(__name__)

STATES = ("pending", "stale", "missing", "done")


@dataclass
class Task:
    """One unit of work. ``work()`` returns the artifacts it made (paths outside its own directory that
    later tasks load), or None. ``outputs`` must exist for the task to count as done; ``deps`` are
    tasks whose outputs and artifacts it consumes, ``reads`` tasks whose records only it reads. Both
    name tasks that come earlier in the list. ``always``: run every time (its marker still records it).
    ``before_rerun(state)`` runs before a stale or missing task reruns (e.g. clears its directory)."""

    name: str
    key: Any
    marker: Path
    work: Callable[[], Iterable[str | Path] | None]
    outputs: tuple[Path, ...] = ()
    deps: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    always: bool = False
    before_rerun: Callable[[str], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # extra fields for the marker (e.g. parameters)


def clear_when_stale(*dirs: Path) -> Callable[[str], None]:
    """A ``before_rerun``: a stale task's output directories go (they hold the results of other
    inputs); a task rerun for missing outputs or artifacts (a killed run, a fresh clone) resumes in place."""
    def before_rerun(state: str) -> None:
        if state != "stale":
            return
        for d in dirs:
            if Path(d).is_dir():
                log.info("%s was made with other inputs; clearing it before the rerun", d)
                shutil.rmtree(d)
    return before_rerun


def input_hashes(tasks: list[Task]) -> dict[str, str]:
    """Each task's input hash (its key and its upstream tasks' input hashes); tasks must be listed
    after everything they depend on."""
    hashes: dict[str, str] = {}
    for t in tasks:
        upstream = [*t.deps, *t.reads]
        unknown = [u for u in upstream if u not in hashes]
        if unknown:
            raise ValueError(f"task {t.name} depends on {', '.join(unknown)}, which is not an earlier task")
        hashes[t.name] = config_hash({"key": t.key, "upstream": {u: hashes[u] for u in sorted(upstream)}}, length=16)
    return hashes


def marker_of(task: Task) -> dict[str, Any] | None:
    try:
        return read_json(task.marker) if task.marker.is_file() else None
    except ValueError:  # a torn or hand-edited marker: the task reruns
        log.warning("%s: unreadable marker %s; the task reruns", task.name, task.marker)
        return None


def state_of(task: Task, input_hash: str) -> str:
    """One of :data:`STATES` (see the module docstring)."""
    done = marker_of(task)
    if done is None:
        return "pending"
    if done.get("input_hash") != input_hash:
        return "stale"
    recorded = [Path(p) for p in done.get("artifacts", [])]
    if any(not p.exists() for p in [*task.outputs, *recorded]):
        return "missing"
    return "done"


FORCED, DOWNSTREAM = "forced", "downstream of a forced task"


def plan(tasks: list[Task], selected: Iterable[str] | None = None, force: Iterable[str] = ()) -> dict[str, str]:
    """What must run, task name -> reason, in task order. ``selected`` (default: all) are the targets:
    those of them that are pending, stale or ``always`` run, and so does every upstream task they need
    that is not done (pending, stale, or whose artifacts are missing). ``force``: tasks to rerun
    whatever their state (the code behind them changed, which no key sees), with everything downstream."""
    by_name = {t.name: t for t in tasks}
    hashes = input_hashes(tasks)
    states = {t.name: state_of(t, hashes[t.name]) for t in tasks}
    targets = set(by_name) if selected is None else set(selected)
    run: dict[str, str] = {}
    for t in tasks:
        if t.name not in targets:
            continue
        if states[t.name] in ("pending", "stale"):
            run[t.name] = states[t.name]
        elif t.always:
            run[t.name] = "always"
        elif states[t.name] == "missing" and any(not p.exists() for p in t.outputs):
            run[t.name] = "outputs missing"
    force, forced = set(force), set()
    for t in tasks:
        if t.name in force or forced & {*t.deps, *t.reads}:
            run[t.name] = FORCED if t.name in force else DOWNSTREAM
            forced.add(t.name)
    for t in reversed(tasks):  # upstream of what runs, from the last task back: cascades
        if t.name not in run:
            continue
        for d in t.deps:
            if d not in run and states[d] != "done":
                run[d] = "rebuild (artifacts missing)" if states[d] == "missing" else f"needed by {t.name}"
        for r in t.reads:
            if r not in run and states[r] in ("pending", "stale"):
                run[r] = f"needed by {t.name}"
    return {t.name: run[t.name] for t in tasks if t.name in run}


@dataclass
class Outcome:
    task: Task
    state: str  # "ran", "failed", "not run" (an upstream task failed), or a state of STATES (skipped)
    reason: str = ""
    seconds: float = 0.0
    error: str = ""


def run(tasks: list[Task], selected: Iterable[str] | None = None, keep_going: bool = False,
        progress: Callable[[Iterable[Task]], Iterable[Task]] | None = None,
        dry_run: bool = False, force: Iterable[str] = (), jobs: int = 1) -> list[Outcome]:
    """Run what :func:`plan` says; a failure stops the rest unless ``keep_going`` (then only the tasks
    downstream of the failure are skipped). One outcome per task (selected ones, or all), in task order.

    ``jobs`` tasks run at once, each as soon as every task it depends on or reads has finished; with one
    job, in task order. Concurrent work runs in daemon threads (a study step's work is a papermill
    kernel, a process of its own, so threads suffice): an interrupt stops the runner at once, and the
    kernels of the steps it was running exit with it."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    hashes = input_hashes(tasks)
    todo = plan(tasks, selected, force)
    shown = [t for t in tasks if selected is None or t.name in set(selected) or t.name in todo]
    if dry_run:
        return [Outcome(t, state_of(t, hashes[t.name]), todo.get(t.name, "")) for t in shown]
    ticks = iter(progress(shown)) if progress else None
    outcomes = {t.name: Outcome(t, state_of(t, hashes[t.name])) for t in shown if t.name not in todo}
    for _ in range(len(outcomes) if ticks else 0):
        next(ticks, None)
    waiting = [t for t in shown if t.name in todo]
    running: dict[str, tuple[Task, float]] = {}
    finished: queue.Queue = queue.Queue()
    broken: set[str] = set()

    def work(t: Task) -> None:
        try:
            finished.put((t, [str(p) for p in (t.work() or [])], None))
        except Exception as e:  # one failed task must not lose the outcomes of the others
            finished.put((t, None, e))

    def settle(t: Task, outcome: Outcome) -> None:
        outcomes[t.name] = outcome
        if ticks:
            next(ticks, None)

    while waiting or running:
        for t in list(waiting):
            upstream = {*t.deps, *t.reads}
            if upstream & broken or (broken and not keep_going):
                waiting.remove(t)
                broken.add(t.name)
                settle(t, Outcome(t, "not run", todo[t.name]))
            elif len(running) < jobs and not upstream & ({w.name for w in waiting} | set(running)):
                waiting.remove(t)
                state = "stale" if todo[t.name] in (FORCED, DOWNSTREAM) else state_of(t, hashes[t.name])
                if state in ("stale", "missing") and t.before_rerun is not None:
                    t.before_rerun(state)
                log.info("%s: running (%s)", t.name, todo[t.name])
                running[t.name] = (t, time.perf_counter())
                if jobs == 1:
                    work(t)
                else:
                    threading.Thread(target=work, args=(t,), name=f"l2s-{t.name}", daemon=True).start()
        if not running:
            continue
        t, artifacts, error = finished.get()
        seconds = time.perf_counter() - running.pop(t.name)[1]
        if error is not None:
            broken.add(t.name)
            lines = str(error).strip().splitlines()
            settle(t, Outcome(t, "failed", todo[t.name], seconds, lines[-1] if lines else repr(error)))
            log.error("%s failed: %s", t.name, outcomes[t.name].error)
            continue
        atomic_write_json(t.marker, {"task": t.name, **t.info, "input_hash": hashes[t.name], "key": t.key,
                                     "artifacts": artifacts, "seconds": round(seconds, 1)})
        settle(t, Outcome(t, "ran", todo[t.name], seconds))
    for _ in ticks or ():
        pass
    return [outcomes[t.name] for t in shown]


ARTIFACTS = "artifacts.json"


def declare_artifacts(run_dir: str | Path, paths: Iterable[str | Path]) -> Path:
    """Record in ``run_dir/artifacts.json`` the cache paths this run made and later runs load (added to
    what it already declared): the runner checks they exist and rebuilds the run when they do not."""
    record = Path(run_dir) / ARTIFACTS
    have = declared_artifacts(run_dir)
    new = [str(p) for p in paths if str(p) not in have]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return atomic_write_json(record, {"artifacts": have + new})


def declared_artifacts(run_dir: str | Path) -> list[str]:
    record = Path(run_dir) / ARTIFACTS
    return list(read_json(record)["artifacts"]) if record.is_file() else []
