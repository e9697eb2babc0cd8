"""l2s.pipeline: what reruns when inputs change, artifacts go missing, a task fails or only some are chosen."""

from pathlib import Path

import pytest

from l2s import pipeline
from l2s.pipeline import Task


class World:
    """Tasks over a directory: ``model`` makes a cache artifact, ``merge`` consumes it, ``evals`` consumes
    the merge, ``other`` stands alone and ``figures`` reads the records of all."""

    def __init__(self, root: Path):
        self.root, self.ran, self.keys, self.fail = root, [], {}, set()

    def work(self, name: str, artifact: bool):
        def go():
            if name in self.fail:
                raise RuntimeError(f"{name} asked to fail")
            self.ran.append(name)
            (self.root / name).mkdir(parents=True, exist_ok=True)
            (self.root / name / "out.txt").write_text(str(self.keys.get(name, 0)))
            if artifact:
                cache = self.root / "cache" / name
                cache.mkdir(parents=True, exist_ok=True)
                return [cache]
            return None
        return go

    def tasks(self) -> list[Task]:
        spec = [("model", True, (), ()), ("merge", True, ("model",), ()), ("evals", False, ("merge",), ()),
                ("other", False, (), ()), ("figures", False, (), ("model", "merge", "evals", "other"))]
        return [Task(name=n, key={"k": self.keys.get(n, 0)}, marker=self.root / n / "marker.json",
                     work=self.work(n, art), outputs=(self.root / n / "out.txt",), deps=deps, reads=reads,
                     before_rerun=lambda state, n=n: (self.root / n / "leftover").unlink(missing_ok=True)
                     if state == "stale" else None)
                for n, art, deps, reads in spec]

    def run(self, **kw):
        self.ran = []
        outcomes = pipeline.run(self.tasks(), **kw)
        return self.ran, {o.task.name: o.state for o in outcomes}


def test_first_run_then_nothing(tmp_path):
    w = World(tmp_path)
    assert w.run()[0] == ["model", "merge", "evals", "other", "figures"]
    ran, states = w.run()
    assert ran == [] and set(states.values()) == {"done"}


def test_a_changed_key_reruns_the_task_and_everything_downstream_only(tmp_path):
    w = World(tmp_path)
    w.run()
    w.keys["merge"] = 2
    assert pipeline.plan(w.tasks()) == {"merge": "stale", "evals": "stale", "figures": "stale"}
    assert w.run()[0] == ["merge", "evals", "figures"]
    assert (tmp_path / "merge" / "out.txt").read_text() == "2"
    w.keys["other"] = 5
    assert w.run()[0] == ["other", "figures"]


def test_missing_artifacts_are_rebuilt_on_demand_only(tmp_path):
    w = World(tmp_path)
    w.run()
    for name in ("model", "merge"):
        (tmp_path / "cache" / name).rmdir()
    # nothing that needs the checkpoints runs: nothing is rebuilt
    assert w.run()[0] == []
    assert pipeline.state_of(w.tasks()[0], pipeline.input_hashes(w.tasks())["model"]) == "missing"
    # the figures only read records: changing them rebuilds no checkpoint
    w.keys["figures"] = 1
    assert w.run()[0] == ["figures"]
    # the evaluation consumes the merge, which consumes the model: both are rebuilt first, in order
    w.keys["evals"] = 1
    assert pipeline.plan(w.tasks()) == {"model": "rebuild (artifacts missing)", "merge": "rebuild (artifacts missing)",
                                        "evals": "stale", "figures": "stale"}
    assert w.run()[0] == ["model", "merge", "evals", "figures"]
    assert (tmp_path / "cache" / "model").is_dir() and (tmp_path / "cache" / "merge").is_dir()


def test_deleted_outputs_rerun_and_a_torn_marker_counts_as_pending(tmp_path):
    w = World(tmp_path)
    w.run()
    (tmp_path / "other" / "out.txt").unlink()
    (tmp_path / "evals" / "marker.json").write_text("{not json")
    assert pipeline.plan(w.tasks()) == {"evals": "pending", "other": "outputs missing"}
    assert w.run()[0] == ["evals", "other"]


def test_failure_stops_downstream_and_keep_going_runs_the_rest(tmp_path):
    w = World(tmp_path)
    w.fail = {"merge"}
    ran, states = w.run()
    assert ran == ["model"] and states == {"model": "ran", "merge": "failed", "evals": "not run",
                                           "other": "not run", "figures": "not run"}
    ran, states = w.run(keep_going=True)
    assert ran == ["other"] and states["evals"] == "not run" and states["figures"] == "not run"
    w.fail = set()
    assert w.run()[0] == ["merge", "evals", "figures"]


def test_selected_tasks_bring_what_they_need(tmp_path):
    w = World(tmp_path)
    ran, states = w.run(selected=["evals"])
    assert ran == ["model", "merge", "evals"] and set(states) == {"model", "merge", "evals"}
    assert w.run(selected=["other"])[0] == ["other"]


def test_tasks_must_follow_what_they_depend_on(tmp_path):
    w = World(tmp_path)
    tasks = w.tasks()
    with pytest.raises(ValueError, match="merge depends on model, which is not an earlier task"):
        pipeline.input_hashes([tasks[1], tasks[0]])


def test_declared_artifacts_accumulate(tmp_path):
    pipeline.declare_artifacts(tmp_path / "run", ["a", "b"])
    pipeline.declare_artifacts(tmp_path / "run", ["b", Path("c")])
    assert pipeline.declared_artifacts(tmp_path / "run") == ["a", "b", "c"]
    assert pipeline.declared_artifacts(tmp_path / "none") == []


def test_forced_tasks_rerun_with_everything_downstream(tmp_path):
    w = World(tmp_path)
    w.run()
    (tmp_path / "merge" / "leftover").write_text("made by the old code")
    w.ran = []
    outcomes = pipeline.run(w.tasks(), force=["merge"])
    assert w.ran == ["merge", "evals", "figures"]
    assert {o.task.name: o.reason for o in outcomes if o.state == "ran"} == {
        "merge": "forced", "evals": "downstream of a forced task", "figures": "downstream of a forced task"}
    assert not (tmp_path / "merge" / "leftover").exists()  # cleared as a stale task's directory is
    assert w.run()[0] == []  # the markers record the same inputs: done again


def test_jobs_run_independent_tasks_at_once_and_dependents_after(tmp_path):
    """Two jobs: ``model`` and ``other`` overlap; ``merge`` starts only after ``model`` ends, ``figures``
    after everything; a failure with two jobs still skips exactly what is downstream of it."""
    import threading
    import time

    log, lock = [], threading.Lock()

    def work(name, seconds):
        def go():
            with lock:
                log.append(("start", name))
            time.sleep(seconds)
            (tmp_path / name).mkdir(exist_ok=True)
            (tmp_path / name / "out.txt").write_text(name)
            with lock:
                log.append(("end", name))
        return go

    spec = [("model", 0.3, (), ()), ("merge", 0.05, ("model",), ()), ("other", 0.3, (), ()),
            ("figures", 0.0, (), ("merge", "other"))]
    tasks = [Task(name=n, key={}, marker=tmp_path / n / "marker.json", work=work(n, s),
                  outputs=(tmp_path / n / "out.txt",), deps=d, reads=r) for n, s, d, r in spec]
    t0 = time.perf_counter()
    outcomes = pipeline.run(tasks, jobs=2)
    assert time.perf_counter() - t0 < 0.6  # model and other overlapped (sequentially: 0.65 s)
    assert [o.state for o in outcomes] == ["ran"] * 4
    assert log.index(("start", "other")) < log.index(("end", "model")) < log.index(("start", "merge"))
    assert log[-2:] == [("start", "figures"), ("end", "figures")]
    assert pipeline.run(tasks, jobs=2) and all(o.state == "done" for o in pipeline.run(tasks, jobs=2))

    w = World(tmp_path / "w")
    w.fail = {"merge"}
    ran, states = w.run(jobs=2, keep_going=True)
    assert states == {"model": "ran", "merge": "failed", "evals": "not run", "other": "ran", "figures": "not run"}
    with pytest.raises(ValueError, match="jobs"):
        pipeline.run(tasks, jobs=0)
